"""What every URL holding a password must be before it is parsed, logged or shown."""

from __future__ import annotations

from urllib.parse import urlsplit

from common.errors import ConfigError


def check_user_info(url: str, what: str) -> None:
    """Refuse `url` if its user or password holds `/`, `?` or `#` unencoded: every parser then
    ends the host at that character and takes the rest of the password for a port, path or
    query — so redaction found no password to mask and logged the URL whole, and a bad-port
    error quoted part of the password (a security review). The message never quotes the URL.
    An `@` in a path or query is refused too; percent-encoded it passes."""
    if "@" in url and "@" not in urlsplit(url).netloc:
        raise ConfigError(
            f"{what}: its user or password holds '/', '?' or '#' (or its path an '@'): "
            "percent-encode them (%2F, %3F, %23, %40)"
        )
