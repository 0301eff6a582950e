"""Latest rows: each device's newest reading kept as one point of a few hundred series, so that a
starting API reads the state of 100,000 devices in about a second instead of asking InfluxDB for
the newest point of 100,000 series (issue 15: InfluxDB 1.6 spends its CPU per series and field of
a query, 8-13 s at 100,000 devices on two cores, whatever the time range; the same devices as
rows, read whole: 1.1-1.5 s, measured side by side on one server).

The layout, shared by every writer (ingest's workers and their spools' drainers, replay, the API
after a full load) and the reader (the API at start):

- measurement `citysense_latest`, in the retention policy `latest` (wire.retention), which keeps
  points for ever: a row's time is not the reading's time but the device's *slot*;
- tags `profile` (the profile's measurement), `writer` (who keeps this row; each writer keeps
  its own rows and never moves one backwards, so a row is the newest reading that writer
  stored) and `bucket` (two hex digits of the device id's hash);
- time: the slot, 48 more bits of that hash as nanoseconds, so every device has one point per
  (profile, writer) that a newer reading overwrites; all slots fall within the first 3.3 days
  of 1970, one shard group of a policy kept for ever (7 days each);
- fields: `device` (the id, which also tells a row of a device whose slot another device's
  hash shares), `at` (the reading's time, ns), `has` (which fields the reading has, below) and
  one field per reading field, named `<measurement>.<field>.<type>`: profiles share the
  measurement, and InfluxDB fixes a field's type per measurement and shard, which is this one
  for ever, so a type must never be reused.

A row written over another keeps the older one's fields the newer reading lacks (InfluxDB merges
the fields of a point written again), and most fields of a profile are optional: `has` tells
the reader which to take. It is `<digest>:<mask>`, the digest naming the writer's profile fields
and types in order (RowKeys.digest), the mask in hex a bit per field in that order. A reader whose
profile has another digest (a profile changed between versions), or a row written before `has`,
takes every field the row holds.

A full load (an API's, the set-up's build: api.live.rebuild) writes its rows under a writer tag
of its own, `full-load/<unix seconds>-<random>`, and then the complete point names it (`rows`):
a reader reads every other writer's rows and only the named full load's, so a replica, a
redeployment or a build never adds a writer's worth of rows to every later start's read, and
a named full load's rows can be *compacted*: written again, under a new tag the point then
names, for only the devices no other writer has a row as new for (api.live.compact). A full
load's tag not named and over a day old is dropped; a point is never written for rows begun
over an hour before (api.live.rows.GEN_MAX_AGE_S), so nothing still to be named is dropped.

A reader takes, per device, the row with the greatest `at` over the writers it reads. The rows
are whole ("complete") only once the point of `citysense_latest_complete` (same policy) says so:
written by the database's set-up while it holds no readings at all (every writer keeps rows from
its first batch on, so none is ever without one: common.schema), or else by a full load from the
readings after it has written its rows (the set-up's build, api.live.rebuild, or an API's) —
readings stored before any writer kept rows (an older version, another program) have no row
until then.

A writer that stores readings without all their rows (its rows off while the `latest` policy is
missing: in the same write, after the readings and before their change marks; a row refused:
right after the write) writes an *owed* mark, `citysense_latest_owed` in the `changes` policy
(which every write of readings needs anyway; `latest` may be the one missing), stamped by
InfluxDB. The complete point records the stamp of the newest owed mark its writer saw
(`owed`): the set-up when it wrote it; a full load the one newest before it read the readings,
and it writes no complete point if a newer one came by the time its rows were written. The rows
are whole only while the newest owed mark is the one the complete point recorded (none for
none): an owed mark after it makes the next start read the readings, whatever the clocks of
the hosts. A mark expires with the changes policy (40 days by default), long after the API's
periodic full reload has written the rows again. Readings written by anything that keeps no
rows are found by the API's periodic full reload, as those without change marks are; after an
import of readings by other means the point is taken back (`citysense schema --readings-imported`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from wire.lineproto import FORMAT, FieldValue, fields, line, series, string_value, tag

MEASUREMENT = "citysense_latest"
COMPLETE = "citysense_latest_complete"
OWED = "citysense_latest_owed"
OWED_FIELD = "owed"  # of the complete point: the stamp of the newest owed mark its writer saw
ROWS_FIELD = "rows"  # of the complete point: the full load whose rows it vouches for ("": none)
FULL_LOAD = "full-load/"  # the writer tag of a full load's rows: this, unix seconds, "-", random
_FULL_LOAD_TAG = re.compile(r"^full-load/([0-9]{1,12})-[0-9a-f]{8}$")
STAMP = "stamp"
PROFILE_TAG = "profile"
WRITER_TAG = "writer"
BUCKET_TAG = "bucket"
DEVICE = "device"
AT = "at"
HAS = "has"
BUCKETS = 256
SLOT_BITS = 48  # 2**48 ns = 3.26 days: within the first shard group of an infinite policy


def complete_line(by: str, at_ns: int, owed: str, rows: str = "") -> str:
    """The point saying the rows are whole, written by `by` at `at_ns`, having seen `owed` as
    the newest owed mark's stamp ("" for none), with the rows of the full load `rows` ("" for
    none): at time 0, so there is only ever one. Every field always: a point written over
    another merges with its fields."""
    return line(COMPLETE, {}, {"by": by, "at": at_ns, OWED_FIELD: owed, ROWS_FIELD: rows}, 0)


def full_load_tag(now_s: int) -> str:
    """A new full load's writer tag (see the module's doc)."""
    return f"{FULL_LOAD}{now_s}-{secrets.token_hex(4)}"


def full_load_began(writer: str) -> int | None:
    """When the full load of writer tag `writer` began (unix seconds); None if it is not a
    full load's tag of this layout."""
    found = _FULL_LOAD_TAG.match(writer)
    return None if found is None else int(found.group(1))


def owed_line(writer: str) -> str:
    """The mark that `writer` stored readings without all their rows (its rows off, a row
    refused), written once they are stored. No timestamp: InfluxDB stamps it with its own
    clock as it stores it, after those readings, so no writer's clock is compared with
    another's; `stamp` (random) tells one mark from another."""
    return f"{series(OWED, {})} {fields({'writer': writer, STAMP: secrets.token_hex(8)})}"


def newest_stamp(points: Iterable[Mapping[str, object]]) -> str:
    """The stamp of the first owed mark of `points` (an answer newest first); "" for none."""
    return next((str(point.get(STAMP, "")) for point in points), "")


def recorded_rows(complete: Mapping[str, object]) -> str:
    """The full load whose rows a complete point vouches for; "" for none (or written before
    full loads were named, whose rows were read as any writer's)."""
    return str(complete.get(ROWS_FIELD) or "")


def recorded_stamp(complete: Mapping[str, object]) -> str:
    """The owed mark's stamp a complete point recorded; "" for none (or written before owed
    marks existed, which counts as none)."""
    return str(complete.get(OWED_FIELD) or "")


def is_row(line_text: str) -> bool:
    return line_text.startswith(_ROW_PREFIX)


def is_owed(line_text: str) -> bool:
    """Whether a line is an owed mark (owed_line: no tags)."""
    return line_text.startswith(_OWED_PREFIX)


_ROW_PREFIX = MEASUREMENT + ","
_OWED_PREFIX = OWED + " "
_DEVICE_KEY = tag(DEVICE) + "="
_AT_KEY = tag(AT) + "="
_HAS_KEY = tag(HAS) + "="


def place_of(device_id: str) -> int:
    """56 bits of a hash of the device id: its bucket (the top 8) and slot (the low 48), so two
    devices share both with a chance of about n² / 2**57 (1 in 30,000 for a million devices);
    the reader checks (api.live.rows.collided)."""
    digest = int.from_bytes(hashlib.blake2b(device_id.encode(), digest_size=7).digest(), "big")
    return digest


def slot_of(device_id: str) -> tuple[str, int]:
    """(bucket tag, slot time in ns) of a device (place_of)."""
    place = place_of(device_id)
    return f"{place >> SLOT_BITS:02x}", place & ((1 << SLOT_BITS) - 1)


def key_of(measurement: str, field: str, field_type: str) -> str:
    """The row field holding a reading field of a profile, typed (see the module's doc)."""
    return f"{measurement}.{field}.{field_type}"


def row_series(measurement: str, writer: str, bucket: str) -> str:
    return series(MEASUREMENT, {PROFILE_TAG: measurement, WRITER_TAG: writer, BUCKET_TAG: bucket})


@dataclass(frozen=True, slots=True)
class RowKeys:
    """A profile's row keys, made once: each field's key as line protocol with its "=", its
    bit in `has`, and the digest of the fields and types in order (see the module's doc)."""

    keys: dict[str, str]
    bits: dict[str, int]
    digest: str


def encoded_keys(measurement: str, types: Mapping[str, str]) -> RowKeys:
    """The row keys of a profile's fields (name: type, in the profile's order)."""
    return RowKeys(
        {name: tag(key_of(measurement, name, kind)) + "=" for name, kind in types.items()},
        {name: 1 << n for n, name in enumerate(types)},
        fields_digest(types),
    )


def fields_digest(types: Mapping[str, str]) -> str:
    """Four hex digits naming a profile's fields and their types, in order."""
    named = " ".join(f"{name}.{kind}" for name, kind in types.items())
    return hashlib.blake2b(named.encode(), digest_size=2).hexdigest()


def row_line(
    row_series_text: str,
    device_id: str,
    *,
    time_ns: int,
    keys: RowKeys,
    fields: Mapping[str, FieldValue],
    slot: int,
    also: int = 0,
) -> tuple[str, int]:
    """A row's line, with `has`, and its mask; fields outside `keys` are not kept. `also`: bits
    of fields the point already holds at this time (written before by an earlier message of
    the same timestamp: the point merges them)."""
    parts = [_DEVICE_KEY + string_value(device_id), _AT_KEY + FORMAT[int](time_ns), ""]
    prefixes, bits, mask = keys.keys, keys.bits, also
    for name, value in fields.items():
        prefix = prefixes.get(name)
        if prefix is not None:
            parts.append(prefix + FORMAT[type(value)](value))
            mask |= bits[name]
    parts[2] = f'{_HAS_KEY}"{keys.digest}:{mask:x}"'
    return f"{row_series_text} {','.join(parts)} {slot}", mask


def mask_of(has: object, digest: str) -> int | None:
    """The mask of a row's `has` if it is of a profile of digest `digest`; None if it does not
    say (no `has`, another digest, or not ours)."""
    if not isinstance(has, str):
        return None
    written, _, mask_hex = has.partition(":")
    if written != digest:
        return None
    try:
        return int(mask_hex, 16)
    except ValueError:
        return None


def absent(has: object, digest: str, count: int) -> tuple[int, ...]:
    """The positions, among a profile's `count` fields in order (of digest `digest`), of the
    fields a row's `has` says its reading lacks; none if it does not say (mask_of)."""
    mask = mask_of(has, digest)
    if mask is None:
        return ()
    return tuple(n for n in range(count) if not mask >> n & 1)
