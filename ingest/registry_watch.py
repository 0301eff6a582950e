"""The registry file, read again when it changes: a device an operator adds (`citysense devices
add|import`) is known to a running worker within seconds, without a restart.

A changed file that does not load (a hand edit gone wrong) is logged with every problem and
ignored: the worker keeps the registry it has, and tries again at the file's next change. Until
one loads, `broken` says so (the gauge `registry_broken`, alert CitySenseRegistryBroken): logged
once, a device added or removed by that edit would otherwise be missed for good.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from device_profiles import ContractError, Profile, Registry, Variant, load_registry

log = logging.getLogger(__name__)


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size)


class RegistryWatch:
    def __init__(
        self,
        path: Path,
        profiles: Mapping[str, Profile],
        variants: Mapping[tuple[str, str], Variant],
        use: Callable[[Registry], None],
    ) -> None:
        self._path = path
        self._profiles = profiles
        self._variants = variants
        self._use = use
        self._seen = _signature(path)
        self.broken = False  # the file changed since the registry in use, and does not load

    def check(self) -> bool:
        """Load the file if it changed since the last look; whether a new registry is in use."""
        now = _signature(self._path)
        if now is None:
            if self._seen is not None:
                # Gone (or unreadable): said, not taken for "unchanged" — a move or a deploy
                # gone wrong would leave every device added later unknown, unnoticed. The
                # registry in use is kept; the file's return is a change, and is loaded.
                self._seen = None
                self.broken = True
                log.error("registry %s is gone or unreadable; keeping the old one", self._path)
            return False
        if now == self._seen:
            return False
        self._seen = now
        try:
            registry = load_registry(self._path, dict(self._profiles), dict(self._variants))
        except ContractError as exc:
            self.broken = True
            log.error(
                "registry %s changed but does not load; keeping the old one:\n%s", self._path, exc
            )
            return False
        self.broken = False
        self._use(registry)
        log.info("registry %s reloaded: %d devices", self._path, len(registry.devices))
        return True

    def run(self, stop: threading.Event, every: float) -> None:
        while not stop.wait(every):
            self.check()
