"""Where the servers' programs are: Debian's packages, or a path an environment variable names."""

from __future__ import annotations

import os
import shutil

from common.errors import ConfigError

SEARCH_PATH = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")


def find_binary(name: str, env_var: str) -> str:
    explicit = os.environ.get(env_var)
    if explicit:
        return explicit
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(SEARCH_PATH))
    if found is None:
        raise ConfigError(
            f"{name} not found; install Debian's package (apt-get install {name.rstrip('d')}) "
            f"or set {env_var}"
        )
    return found
