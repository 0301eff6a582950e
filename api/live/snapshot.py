"""The latest state on disk: written after each complete load from InfluxDB and at shutdown, read
at start so that a restarted API queries InfluxDB only for what changed since (issue 15).

Why: InfluxDB 1.6 spends about 5 µs of CPU per series and field for any query over a shard,
whatever its time range (measured: a profile's raw points of the last 10 minutes cost as much as
its latest point per device over 30 days), so loading 100,000 devices costs about 9 s of
InfluxDB's CPU, and more per shard the lookback spans. A snapshot restores the columns in well
under a second.

What may be trusted, and why. A snapshot holds the state as it was after the load or catch-up
that began at `as_of_ns`, and the change marks (wire.changes) read just before its queries.
Every writer of readings (ingest, replay) writes its readings first and then a mark, with a
fresh random stamp, for each (profile, district, 15-minute window) it wrote into. So a reading
stored after those marks were read changed a mark: at start, the marks are read again (after the
state feed is subscribed) and each (profile, district) whose marks differ is queried again from
its earliest changed window, whatever its age — a late reading is found by its window, and
merged by device time like any reading (newest wins). Since version 2 it also holds what the
state feed vouched for since (api.live.coverage: the marks it announced, each publisher's last
number), so that the messages the broker kept for the API's session while it was down spare
those queries. Readings written into InfluxDB by any other means carry no mark and are found by
the next full reload.

Refused, with the reason logged, and the full load done instead: a file that is not a snapshot,
of another version or byte order, whose checksum fails, larger than the bound, older than the
bound, or of another contract (profiles, fields, registry: the columns are by registry order).
Written to a temporary file in the same folder and renamed over the old one, so a reader never
sees half a snapshot.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import struct
import sys
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from api.core.readings import Value
from api.live.columns import Codes
from api.live.coverage import Marks
from api.live.state import LiveState
from common.files import sync_folder

logger = logging.getLogger(__name__)

MAGIC = b"CITYSENSE-STATE\n"
VERSION = 2  # 2: what the state feed vouched for (api.live.coverage)
FILE_NAME = "latest-state.snapshot"
_TEMPORARY_PREFIX = f".{FILE_NAME}."
_DIGEST = 32  # sha256 of everything after it
_HEAD = struct.Struct("<Q")  # length of the JSON header


class Refused(Exception):
    """The snapshot cannot be trusted; the message says why."""


class Missing(Refused):
    """No snapshot yet: a first start, a new replica."""


@dataclass(frozen=True, slots=True)
class Restored:
    as_of_ns: int
    marks: Marks
    size: int
    feed: object = None  # api.live.coverage's part, checked there


def fingerprint(state: LiveState, database: str) -> str:
    """What the snapshot depends on: the database it was loaded from, the profiles' fields and
    types, and the registry in its order (the columns are indexed by it)."""
    digest = hashlib.sha256(f"{database}\n".encode())
    contract = state.contract
    for name in sorted(contract.profiles):
        profile = contract.profiles[name]
        fields = ",".join(f"{f}:{spec.type.value}" for f, spec in profile.fields.items())
        digest.update(f"{name}|{profile.measurement}|{fields}\n".encode())
    digest.update(
        "\n".join(f"{d.device_id},{d.profile},{d.district}" for d in state.registered).encode()
    )
    return digest.hexdigest()


# --- values of tables and odd maps: typed, since JSON alone would read 1.0 back as 1 ---


def _value(value: Value) -> list[Any]:
    if isinstance(value, bool):
        return ["b", value]
    if isinstance(value, int):
        return ["i", str(value)]  # beyond 64 bits too
    if isinstance(value, float):
        return ["f", value.hex()]  # nan and inf too
    return ["s", value]


def _unvalue(item: Any) -> Value:
    kind, raw = item
    if kind == "b" and isinstance(raw, bool):
        return raw
    if kind == "i" and isinstance(raw, str):
        return int(raw)
    if kind == "f" and isinstance(raw, str):
        return float.fromhex(raw)
    if kind == "s" and isinstance(raw, str):
        return raw
    raise Refused(f"a value of unknown kind {kind!r}")


def encode(
    state: LiveState,
    fingerprinted: str,
    as_of_ns: int,
    marks: Marks,
    written_ns: int,
    *,
    feed: object = None,
) -> list[bytes]:
    """The snapshot as parts to write one after the other: one copy of the state's arrays
    (taken on the event loop, written by another thread while the state moves on), not three."""
    blobs: list[bytes] = [state.times().tobytes()]
    columns: list[dict[str, Any]] = []
    for profile, values in state.columns():
        for name, column in values.columns.items():
            blobs += [bytes(column.present), column.values.tobytes()]
            columns.append(
                {
                    "profile": profile,
                    "field": name,
                    "table": None
                    if column.table is None
                    else [_value(v) for v in column.table[1:]],
                    "odd": [[slot, _value(v)] for slot, v in column.odd.items()],
                }
            )
    header = {
        "version": VERSION,
        "byteorder": sys.byteorder,
        "fingerprint": fingerprinted,
        "as_of_ns": as_of_ns,
        "written_ns": written_ns,
        "devices": len(state.registered),
        "marks": [[m, d, sorted(w.items())] for (m, d), w in sorted(marks.items())],
        "columns": columns,
        "blobs": [len(b) for b in blobs],
        "feed": feed,
    }
    head = orjson.dumps(header)
    body = [_HEAD.pack(len(head)) + head, *blobs]
    digest = hashlib.sha256()
    for part in body:
        digest.update(part)
    return [MAGIC, digest.digest(), *body]


def write(folder: Path, parts: list[bytes], max_bytes: int) -> bool:
    """Atomically replace the snapshot in `folder`; False (logged) if over the bound.

    A write that fails (a full disk, a quota) removes its partial file before the error goes up:
    a snapshot is tens of MB, and each attempt would otherwise leave one more behind on a disk
    that is already full. Partial files of a writer that was killed are swept by `sweep`.
    """
    size = sum(len(p) for p in parts)
    if size > max_bytes:
        logger.warning(
            "state snapshot not written: %d bytes is over the bound of %d", size, max_bytes
        )
        return False
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / FILE_NAME
    temporary = folder / f"{_TEMPORARY_PREFIX}{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with temporary.open("wb") as out:
            out.writelines(parts)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)  # readers see the old file or the new one, never a part
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    # Without it a power cut can leave the old snapshot (harmless: it is checked whole and
    # caught up by its marks).
    sync_folder(folder)
    return True


def sweep(folder: Path, older_than_s: float, now_s: float) -> int:
    """Remove partial snapshots left by writers that were killed mid-write; the number removed.

    Only files older than `older_than_s`: replicas may share the folder, and another one may be
    writing its snapshot right now (a write takes seconds even at a million devices).
    """
    removed = 0
    try:
        leftovers = list(folder.glob(f"{_TEMPORARY_PREFIX}*.tmp"))
    except OSError:
        return 0
    for path in leftovers:
        try:
            if now_s - path.stat().st_mtime > older_than_s:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue  # another replica swept it first
    if removed:
        logger.warning("removed %d partial state snapshot(s) left in %s", removed, folder)
    return removed


def read(folder: Path, max_bytes: int) -> bytes:
    path = folder / FILE_NAME
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise Refused(f"{size} bytes is over the bound of {max_bytes}")
        return path.read_bytes()
    except FileNotFoundError:
        raise Missing("no snapshot") from None
    except OSError as exc:
        raise Refused(f"unreadable: {exc}") from exc


def restore(
    state: LiveState, fingerprinted: str, data: bytes | bytearray, now_ns: int, max_age_s: float
) -> Restored:
    """Check `data` whole, then put its columns into `state` (nothing is changed when refused)."""
    if not data.startswith(MAGIC):
        raise Refused("not a state snapshot")
    # Views, not copies: at a million devices the body is tens of MB.
    view = memoryview(data)
    digest, body = view[len(MAGIC) : len(MAGIC) + _DIGEST], view[len(MAGIC) + _DIGEST :]
    if hashlib.sha256(body).digest() != digest:
        raise Refused("checksum mismatch (truncated or corrupt)")
    try:
        (length,) = _HEAD.unpack_from(body)
        header = orjson.loads(body[_HEAD.size : _HEAD.size + length])
        blobs_at = _HEAD.size + length
        return _restore(
            state,
            header,
            body,
            at=blobs_at,
            expected=fingerprinted,
            now_ns=now_ns,
            max_age_s=max_age_s,
            size=len(data),
        )
    except (struct.error, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise Refused(f"malformed: {exc!r}") from exc


def _restore(
    state: LiveState,
    header: Mapping[str, Any],
    body: memoryview,
    *,
    at: int,
    expected: str,
    now_ns: int,
    max_age_s: float,
    size: int,
) -> Restored:
    if header["version"] != VERSION:
        raise Refused(f"version {header['version']!r}, this API reads {VERSION}")
    if header["byteorder"] != sys.byteorder:
        raise Refused(f"written on a {header['byteorder']}-endian machine")
    if header["fingerprint"] != expected:
        raise Refused("written for another database, other profiles or another registry")
    as_of = int(header["as_of_ns"])
    age = (now_ns - as_of) / 1e9
    if age > max_age_s or age < 0:
        raise Refused(f"as of {age:.0f} s ago, outside [0, {max_age_s:.0f}] s")
    sizes = iter(header["blobs"])

    def blob(target: bytearray | array[Any]) -> memoryview:
        """The next blob, checked to be exactly as long as `target`'s buffer."""
        nonlocal at
        length = next(sizes)
        if length != memoryview(target).nbytes:
            raise Refused("a part of another size than this registry's")
        raw = body[at : at + length]
        if len(raw) != length:
            raise Refused("shorter than its header says")
        at += length
        return raw

    # Everything is read and checked before anything of `state` is changed, then copied into
    # the state's own arrays in place (no copy of a column in between).
    times = state.times()
    staged: list[tuple[bytearray | array[Any], memoryview]] = [(times, blob(times))]
    by_key = {(p, n): c for p, values in state.columns() for n, c in values.columns.items()}
    tables = []
    for spec in header["columns"]:
        column = by_key.pop((spec["profile"], spec["field"]))
        staged += [(column.present, blob(column.present)), (column.values, blob(column.values))]
        table = None if spec["table"] is None else [_unvalue(v) for v in spec["table"]]
        if (table is None) != (column.table is None):
            raise Refused(f"column {spec['profile']}.{spec['field']} of another kind")
        odd = {int(slot): _unvalue(v) for slot, v in spec["odd"]}
        tables.append((column, table, odd))
    if by_key:
        raise Refused("columns missing")
    marks: Marks = {
        (str(m), str(d)): {int(w): int(s) for w, s in windows} for m, d, windows in header["marks"]
    }
    for target, raw in staged:
        memoryview(target).cast("B")[:] = raw
    for column, table, odd in tables:
        if table is not None and isinstance(column, Codes):
            assert column.table is not None
            column.table[1:] = table
            column.codes.clear()
            column.codes.update(((type(v), v), n) for n, v in enumerate(table, 1))
        column.odd.clear()
        column.odd.update(odd)
    return Restored(as_of, marks, size, header.get("feed"))
