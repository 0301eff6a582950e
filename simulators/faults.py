"""Firmware faults injected into otherwise valid telemetry, and the rejection ingest must record.

Each fault is bad in one unambiguous way only, so the expected reason code is certain:
a malformed payload is never valid JSON, a wrong type is never a numeric string a lenient parser
could coerce, an out-of-range value keeps the field's type and is finite.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass

from device_profiles import FieldType, Profile

MALFORMED_JSON = "malformed_json"
WRONG_TYPE = "wrong_type"
OUT_OF_RANGE = "out_of_range"
DUPLICATE = "duplicate"
ALL_FAULTS: tuple[str, ...] = (MALFORMED_JSON, WRONG_TYPE, OUT_OF_RANGE, DUPLICATE)

# Reason code ingest records for each fault: one for a malformed message, one for the reading a
# wrong_type or out_of_range hit, and one per reading of a duplicate message, whose readings are
# stored once (by the original) and dead-lettered as duplicates (by the copy).
REASONS: Mapping[str, str] = {
    MALFORMED_JSON: "invalid_json",
    WRONG_TYPE: "wrong_type",
    OUT_OF_RANGE: "out_of_range",
    DUPLICATE: "duplicate",
}

# What broken firmware puts where a number belongs. No numeric strings ("12.5") and no null or
# empty string: a lenient ingest might coerce those or read them as "field missing".
WRONG_TYPE_VALUES: tuple[str | bool, ...] = ("ERR", "sensor fault", "#VALUE!", "unknown", True)

# Debug output and modem chatter that end up on the telemetry topic.
GARBAGE: tuple[bytes, ...] = (
    b"ERR 0x1F sensor timeout\r\n",
    b"AT+CSQ\r\n+CSQ: 18,99\r\nOK\r\n",
    b"reading=ok;",
)

SENTINEL = -9999.0  # the classic "no value" a meter firmware sends


def check_faults(faults: Sequence[str]) -> tuple[str, ...]:
    unknown = [f for f in faults if f not in ALL_FAULTS]
    if unknown:
        raise ValueError(f"unknown fault kind(s) {unknown}; choose from {list(ALL_FAULTS)}")
    return tuple(dict.fromkeys(faults))


@dataclass(frozen=True, slots=True)
class NumericField:
    name: str
    integer: bool
    low: float
    high: float
    # Values the profile reads as "no data": ingest drops them silently, so a fault never uses one.
    sentinels: frozenset[float | str]


def fault_targets(profile: Profile) -> tuple[NumericField, ...]:
    """The fields a wrong_type or out_of_range fault can hit: numbers with a declared range.

    Under `on_invalid_field: drop_field` ingest stores the rest of a reading without the bad
    field, unless that field is required (then the reading lacks it and is rejected as
    missing_field instead); so only optional fields are hit there, keeping the reason certain.
    """
    drop = profile.on_invalid_field == "drop_field"
    return tuple(
        NumericField(
            name,
            spec.type is FieldType.INTEGER,
            spec.range[0],
            spec.range[1],
            frozenset(spec.sentinels),
        )
        for name, spec in profile.fields.items()
        if spec.type in (FieldType.NUMBER, FieldType.INTEGER)
        and spec.range is not None
        and not (drop and spec.required)
    )


def malformed(payload: bytes, document: object, rng: random.Random) -> bytes:
    """Bytes no JSON parser accepts, derived from a valid payload and its decoded `document`."""
    choice = rng.randrange(4)
    if choice == 0:
        # Cut short (a lost TCP segment, a full modem buffer). The outermost bracket opens at
        # byte 0 and closes at the last byte, so every proper prefix leaves it unclosed.
        return payload[: rng.randrange(1, len(payload))]
    if choice == 1:
        return payload[:-1] + b"," + payload[-1:]  # trailing comma
    if choice == 2:
        return repr(document).encode()  # Python repr: single quotes, True/False
    return GARBAGE[rng.randrange(len(GARBAGE))]


def _pick(
    fields: Sequence[NumericField], reading: Mapping[str, object], rng: random.Random
) -> NumericField | None:
    present = [f for f in fields if f.name in reading]
    return present[rng.randrange(len(present))] if present else None


def _allowed(value: float | str | bool, target: NumericField) -> bool:
    # True == 1 in Python, but ingest never takes a boolean for a numeric sentinel.
    return isinstance(value, bool) or value not in target.sentinels


def wrong_type(
    reading: MutableMapping[str, object], fields: Sequence[NumericField], rng: random.Random
) -> str | None:
    """Replace one numeric field by a non-number; the field's name, or None if none is present."""
    target = _pick(fields, reading, rng)
    if target is None:
        return None
    choices = [v for v in WRONG_TYPE_VALUES if _allowed(v, target)]
    reading[target.name] = choices[rng.randrange(len(choices))]
    return target.name


def out_of_range(
    reading: MutableMapping[str, object], fields: Sequence[NumericField], rng: random.Random
) -> str | None:
    """Push one numeric field outside its range, keeping its type; its name, or None."""
    target = _pick(fields, reading, rng)
    if target is None:
        return None
    margin = max(1.0, 0.5 * (target.high - target.low))
    candidates: list[float] = []
    for raw in (target.low - margin, target.high + margin, SENTINEL):
        value = (math.floor(raw) if raw < target.low else math.ceil(raw)) if target.integer else raw
        if not target.low <= value <= target.high and _allowed(value, target):
            candidates.append(value)
    if not candidates:
        return None
    value = candidates[rng.randrange(len(candidates))]
    reading[target.name] = int(value) if target.integer else float(value)
    return target.name
