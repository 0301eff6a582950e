"""Spool: batches kept on local disk while InfluxDB is away, so the broker can be acknowledged.

Without it, an outage backs up into the broker (bounded by its queue limits); with it, a worker
writes each batch it could not store to a segment file — written to a temporary name, fsynced,
then renamed, so a segment either exists whole or not at all — and only then acknowledges the
batch. A drainer writes segments to InfluxDB when it is back and deletes them. At the size bound
the spool refuses more, the worker stops acknowledging, and the broker holds the rest: back-
pressure, never loss. Segments survive a restart; a half-written `.tmp` left by a crash is
deleted on start, which is safe because its batch was never acknowledged.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from pathlib import Path

SUFFIX = ".lp"


class Spool:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._seq = itertools.count()
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.tmp"):
            stale.unlink()
        self._bytes = sum(p.stat().st_size for p in self.segments())

    def segments(self) -> list[Path]:
        """Oldest first (names start with the time they were written)."""
        return sorted(self.folder.glob(f"*{SUFFIX}"))

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def append(self, lines: list[str]) -> bool:
        """Store lines durably; False (nothing written) if that would pass the size bound."""
        data = ("\n".join(lines) + "\n").encode()
        with self._lock:
            if self._bytes + len(data) > self.max_bytes:
                return False
            self._bytes += len(data)
            name = f"{time.time_ns():020d}-{next(self._seq):06d}"
        tmp = self.folder / f"{name}.tmp"
        with tmp.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        tmp.rename(self.folder / f"{name}{SUFFIX}")
        self._fsync_folder()
        return True

    def read(self, segment: Path) -> list[str]:
        return segment.read_text().splitlines()

    def remove(self, segment: Path) -> None:
        size = segment.stat().st_size
        segment.unlink()
        with self._lock:
            self._bytes -= size

    def _fsync_folder(self) -> None:
        # The rename is durable only once the folder entry is on disk too.
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
