"""Spool: batches kept on local disk while InfluxDB is away, so the broker can be acknowledged.

Without it, an outage backs up into the broker (bounded by its queue limits); with it, a worker
writes each batch it could not store to a segment file — written to a temporary name, fsynced,
then renamed, so a segment either exists whole or not at all — and only then acknowledges the
batch. A drainer writes segments to InfluxDB when it is back and deletes them. At the size bound,
or when the disk refuses a write, the spool refuses more, the worker stops acknowledging, and the
broker holds the rest: back-pressure, never loss. Segments survive a restart; a half-written
`.tmp` left by a crash is deleted on start, which is safe because its batch was never acknowledged.
The folder is one worker's alone (a `lock` file, flocked while the spool is open): a second
worker under the same client id — a copied configuration — would delete the first's half-written
segments as stale and drain its segments with it, so it is refused at start (SpoolInUse).

Framing: each line is one record, a 4-byte big-endian length and a CRC-32 of its bytes, then the
bytes. Any byte can be carried (a dead letter's payload holds U+2028 or whatever a device sent),
and a damaged segment is recognised rather than misread: it is moved aside to `corrupt/` (kept,
counted, logged) so the segments after it still drain. Segments of the older newline-separated
format (`.lp`) are still read, split on newlines only.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import BinaryIO

from common.errors import SpoolInUse
from common.files import sync_folder

SUFFIX = ".seg"
LEGACY_SUFFIX = ".lp"
CORRUPT = "corrupt"
LOCK = "lock"
_HEADER = struct.Struct(">II")

log = logging.getLogger(__name__)


class CorruptSegment(Exception):
    """A segment that cannot be read back as the lines written to it."""


def frame(lines: list[str]) -> bytes:
    parts = []
    for line in lines:
        data = line.encode()
        parts.append(_HEADER.pack(len(data), zlib.crc32(data)))
        parts.append(data)
    return b"".join(parts)


def unframe(data: bytes) -> list[str]:
    lines = []
    at = 0
    while at < len(data):
        if at + _HEADER.size > len(data):
            raise CorruptSegment(f"a record header cut short at byte {at}")
        size, crc = _HEADER.unpack_from(data, at)
        at += _HEADER.size
        record = data[at : at + size]
        if len(record) != size or zlib.crc32(record) != crc:
            raise CorruptSegment(f"a record at byte {at - _HEADER.size} fails its length or CRC")
        try:
            lines.append(record.decode())
        except UnicodeDecodeError as exc:
            raise CorruptSegment(f"a record at byte {at} is not UTF-8: {exc}") from None
        at += size
    return lines


class Spool:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self.corrupt = 0  # segments moved aside
        self.refused = 0  # appends the disk refused (full, read-only, gone)
        folder.mkdir(parents=True, exist_ok=True)
        self._claim: BinaryIO | None = _claim(folder)  # closed (by `close`, or at exit): let go
        for stale in folder.glob("*.tmp"):
            stale.unlink()
        self._bytes = sum(p.stat().st_size for p in self.segments())

    def close(self) -> None:
        """Let the folder go (a later spool may open it); segments stay for it."""
        if self._claim is not None:
            self._claim.close()
            self._claim = None

    def segments(self) -> list[Path]:
        """Oldest first (names start with the time they were written)."""
        found = [*self.folder.glob(f"*{SUFFIX}"), *self.folder.glob(f"*{LEGACY_SUFFIX}")]
        return sorted(found, key=lambda p: p.name)

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def append(self, lines: list[str]) -> bool:
        """Store lines durably; False (nothing kept) past the size bound or if the disk refuses."""
        data = frame(lines)
        with self._lock:
            if self._bytes + len(data) > self.max_bytes:
                return False
            self._bytes += len(data)
            name = f"{time.time_ns():020d}-{next(self._seq):06d}"
        tmp, segment = self.folder / f"{name}.tmp", self.folder / f"{name}{SUFFIX}"
        try:
            self._write(tmp, data)
            tmp.rename(segment)
            self._fsync_folder()
        except OSError as exc:
            log.error("spool: could not write %s (%s); holding the batch instead", tmp.name, exc)
            tmp.unlink(missing_ok=True)
            # Renamed but not made durable: the batch is held, so the segment goes too (left,
            # it would be drained again and counted off the spool's bytes it was never in).
            segment.unlink(missing_ok=True)
            with self._lock:
                self._bytes -= len(data)
                self.refused += 1
            return False
        return True

    def read(self, segment: Path) -> list[str]:
        """The lines of a segment; CorruptSegment if it cannot be read back whole."""
        data = segment.read_bytes()
        if segment.suffix == LEGACY_SUFFIX:
            try:
                return [line for line in data.decode().split("\n") if line]
            except UnicodeDecodeError as exc:
                raise CorruptSegment(f"not UTF-8: {exc}") from None
        return unframe(data)

    def remove(self, segment: Path) -> None:
        size = segment.stat().st_size
        segment.unlink()
        with self._lock:
            self._bytes -= size

    def quarantine(self, segment: Path, why: str) -> Path:
        """Move a segment that cannot be read aside, kept for an operator, out of the drain."""
        aside = self.folder / CORRUPT
        aside.mkdir(exist_ok=True)
        target = aside / segment.name
        size = segment.stat().st_size
        segment.rename(target)
        with self._lock:
            self._bytes -= size
            self.corrupt += 1
        log.error("spool: segment %s is damaged (%s); moved to %s", segment.name, why, target)
        return target

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        with path.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())

    def _fsync_folder(self) -> None:
        sync_folder(self.folder)  # the rename is durable only once the folder entry is too


def _claim(folder: Path) -> BinaryIO:
    """The folder's lock file, flocked (exclusive, per open file: a second spool of this very
    process is refused too) and holding this process's id for whoever is refused."""
    claim = (folder / LOCK).open("a+b")
    try:
        fcntl.flock(claim.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        claim.seek(0)
        holder = claim.read(32).decode(errors="replace").strip() or "?"
        claim.close()
        raise SpoolInUse(
            f"spool folder {folder} is in use by another process (pid {holder}): is another "
            "ingest worker running with the same CITYSENSE_CLIENT_ID? Each needs its own"
        ) from None
    except OSError as exc:
        # A filesystem without flock (some FUSE or CIFS mounts): the spool works as before,
        # without the guard, said once.
        log.warning(
            "spool folder %s cannot be locked (%s): two workers under one client id "
            "would not be told apart",
            folder,
            exc,
        )
    claim.truncate(0)
    claim.write(f"{os.getpid()}\n".encode())
    claim.flush()
    return claim
