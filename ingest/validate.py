"""Validate: one raw reading object + its profile → a canonical Reading, or a Rejected.

A profile is compiled once into per-field checkers, so the per-reading cost is a dict walk and a
few comparisons. A reading is rejected as a whole at its first bad field: storing the rest would
quietly hide a firmware fault.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from device_profiles import FieldSpec, FieldType, Profile
from ingest.stages import Reading
from wire.lineproto import FieldValue
from wire.reasons import Reason

# Epoch numbers at or above this are milliseconds: 1e11 seconds is the year 5138, 1e11 ms is 1973.
_MS_THRESHOLD = 100_000_000_000
_NS_PER_S = 1_000_000_000
_FAR = 1e17  # as epoch milliseconds, over three million years away
_CONTROL = {chr(c) for c in range(32)} | {"\x7f"}


class Invalid(Exception):
    """Raised inside a field checker; carries the reason code. Only ever caught in this module."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


Checker = Callable[[object], FieldValue]


def _is_number(value: object) -> bool:
    # bool is an int in Python; for a device, true is not 1.
    return type(value) is int or type(value) is float


def _range_check(name: str, spec: FieldSpec, number: float) -> None:
    if spec.range is not None and not spec.range[0] <= number <= spec.range[1]:
        lo, hi = spec.range
        raise Invalid(Reason.OUT_OF_RANGE, f"{name}={number} outside [{lo}, {hi}]")


_LARGEST = 1.7976931348623157e308  # bounds that no NaN and no infinity lies within


def _number(name: str, spec: FieldSpec) -> Checker:
    lo, hi = spec.range if spec.range is not None else (-_LARGEST, _LARGEST)

    def check(value: object) -> FieldValue:
        # The hot path: one exact type test and one chained comparison, which also refuses NaN
        # and infinity; which of those it was is worked out only when a value fails.
        kind = type(value)
        if kind is float:
            number: float = value  # type: ignore[assignment]
        elif kind is int:
            number = float(value)  # type: ignore[arg-type]
        else:
            raise Invalid(Reason.WRONG_TYPE, f"{name} must be a number, got {_kind(value)}")
        if lo <= number <= hi:
            return number
        if not math.isfinite(number):
            raise Invalid(Reason.NON_FINITE, f"{name} is not finite")
        raise Invalid(Reason.OUT_OF_RANGE, f"{name}={number} outside [{lo}, {hi}]")

    return check


def _integer(name: str, spec: FieldSpec) -> Checker:
    def check(value: object) -> FieldValue:
        if type(value) is float and value.is_integer():
            value = int(value)  # 42.0 from a firmware that only has floats is still 42
        if type(value) is not int:
            raise Invalid(Reason.WRONG_TYPE, f"{name} must be an integer, got {_kind(value)}")
        _range_check(name, spec, value)
        return value

    return check


def _boolean(name: str, _spec: FieldSpec) -> Checker:
    def check(value: object) -> FieldValue:
        if type(value) is not bool:
            raise Invalid(Reason.WRONG_TYPE, f"{name} must be true or false, got {_kind(value)}")
        return value

    return check


def _state(name: str, spec: FieldSpec) -> Checker:
    allowed = frozenset(spec.values or ())

    def check(value: object) -> FieldValue:
        if type(value) is not str:
            raise Invalid(Reason.WRONG_TYPE, f"{name} must be a string, got {_kind(value)}")
        if value not in allowed:
            raise Invalid(Reason.INVALID_VALUE, f"{name}={value[:40]!r} not in {sorted(allowed)}")
        return value

    return check


def _text(name: str, spec: FieldSpec) -> Checker:
    def check(value: object) -> FieldValue:
        if type(value) is not str:
            raise Invalid(Reason.WRONG_TYPE, f"{name} must be a string, got {_kind(value)}")
        if len(value) > spec.max_length:
            raise Invalid(Reason.INVALID_VALUE, f"{name} longer than {spec.max_length}")
        if any(c in _CONTROL for c in value):
            raise Invalid(Reason.INVALID_VALUE, f"{name} holds control characters")
        return value

    return check


_CHECKERS: dict[FieldType, Callable[[str, FieldSpec], Checker]] = {
    FieldType.NUMBER: _number,
    FieldType.INTEGER: _integer,
    FieldType.BOOLEAN: _boolean,
    FieldType.STATE: _state,
    FieldType.TEXT: _text,
}


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


ALL_FORMS = frozenset({"epoch_s", "epoch_ms", "rfc3339"})


def _form_allowed(form: str, forms: frozenset[str]) -> None:
    if form not in forms:
        raise Invalid(Reason.BAD_TIMESTAMP, f"timestamp form {form} not accepted by the profile")


def parse_timestamp(value: object, forms: frozenset[str] = ALL_FORMS) -> int:
    """Epoch seconds, epoch milliseconds (numbers) or RFC 3339 with a zone → ns since the epoch."""
    if type(value) is int or type(value) is float:
        if not math.isfinite(value):
            raise Invalid(Reason.BAD_TIMESTAMP, "timestamp is not finite")
        if abs(value) > _FAR:
            # Beyond any clock; converting it would overflow a float (1e306 ms → inf ns).
            reason = Reason.TIMESTAMP_IN_FUTURE if value > 0 else Reason.TIMESTAMP_TOO_OLD
            raise Invalid(reason, f"timestamp {value:.3g} is beyond any date")
        millis = abs(value) >= _MS_THRESHOLD
        _form_allowed("epoch_ms" if millis else "epoch_s", forms)
        if type(value) is int:
            return value * 1_000_000 if millis else value * _NS_PER_S
        micros = round(value * 1000) if millis else round(value * 1_000_000)
        return micros * 1000
    if type(value) is str:
        _form_allowed("rfc3339", forms)
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise Invalid(
                Reason.BAD_TIMESTAMP, f"timestamp {value[:40]!r} is not RFC 3339"
            ) from None
        if parsed.tzinfo is None:
            raise Invalid(Reason.BAD_TIMESTAMP, f"timestamp {value[:40]!r} has no time zone")
        seconds = int(parsed.timestamp())
        return seconds * _NS_PER_S + parsed.microsecond * 1000
    raise Invalid(Reason.BAD_TIMESTAMP, f"timestamp must be a number or string, got {_kind(value)}")


@dataclass(frozen=True, slots=True)
class CompiledProfile:
    profile: Profile
    checkers: dict[str, Checker]
    required: tuple[str, ...]
    sentinels: dict[str, frozenset[object]]
    drop_invalid: bool
    unknown_fields: str  # the profile's policy: ignore, report or reject
    ts_field: str
    ts_forms: frozenset[str]
    max_future_ns: int
    max_age_ns: int
    stamp_missing: bool

    @classmethod
    def compile(cls, profile: Profile) -> CompiledProfile:
        policy = profile.timestamp
        return cls(
            profile=profile,
            checkers={n: _CHECKERS[s.type](n, s) for n, s in profile.fields.items()},
            required=tuple(n for n, s in profile.fields.items() if s.required),
            sentinels={n: frozenset(s.sentinels) for n, s in profile.fields.items() if s.sentinels},
            drop_invalid=profile.on_invalid_field == "drop_field",
            unknown_fields=profile.unknown_fields,
            ts_field=policy.field,
            ts_forms=frozenset(policy.forms),
            max_future_ns=int(policy.max_future_skew * _NS_PER_S),
            max_age_ns=int(policy.max_age * _NS_PER_S),
            stamp_missing=policy.missing == "receive_time",
        )


def validate(
    compiled: CompiledProfile, device_id: str, obj: dict[str, Any], received_ns: int
) -> Reading | Invalid:
    """The canonical reading, or the Invalid that says why not (returned, not raised)."""
    fields: dict[str, FieldValue] = {}
    dropped: list[tuple[Reason, str]] = []
    unknown: list[tuple[str, object]] = []
    sentinels = 0
    try:
        time_ns = _time_of(compiled, obj, received_ns)
        checkers = compiled.checkers
        for key, value in obj.items():
            checker = checkers.get(key)
            if checker is not None:
                if key in compiled.sentinels and _is_sentinel(value, compiled.sentinels[key]):
                    sentinels += 1
                    continue
                try:
                    fields[key] = checker(value)
                except Invalid as invalid:
                    if not compiled.drop_invalid:
                        raise
                    dropped.append((invalid.reason, f"field {key} dropped: {invalid.detail}"))
            elif key == "device_id" and value != device_id:
                # Identity comes from the topic (tied to credentials by the ACL); a payload that
                # claims another device is a forgery or a misconfigured gateway.
                raise Invalid(
                    Reason.DEVICE_ID_MISMATCH,
                    f"payload names device {str(value)[:40]!r}, topic {device_id!r}",
                )
            elif key not in (compiled.ts_field, "device_id"):
                unknown.append((key, value))
    except Invalid as invalid:
        return invalid
    for name in compiled.required:
        if name not in fields:
            return Invalid(Reason.MISSING_FIELD, f"required field {name} is missing")
    if unknown and compiled.unknown_fields == "reject":
        names = ", ".join(repr(name[:40]) for name, _ in unknown[:5])
        return Invalid(Reason.UNKNOWN_FIELD, f"fields the profile does not declare: {names}")
    if not fields:
        return Invalid(Reason.NO_FIELDS, "no field of the profile in the reading")
    kept = tuple(unknown) if compiled.unknown_fields == "report" else ()
    return Reading(
        compiled.profile.profile, device_id, time_ns, fields, tuple(dropped), sentinels, kept
    )


def _is_sentinel(value: object, sentinels: frozenset[object]) -> bool:
    # True == 1 in Python, so a boolean is never a numeric sentinel; lists are not hashable.
    return type(value) in (int, float, str) and value in sentinels


def _time_of(compiled: CompiledProfile, obj: dict[str, Any], received_ns: int) -> int:
    raw = obj.get(compiled.ts_field)
    if raw is None:
        if compiled.stamp_missing:
            return received_ns
        raise Invalid(Reason.MISSING_TIMESTAMP, f"no {compiled.ts_field!r} in the reading")
    time_ns = parse_timestamp(raw, compiled.ts_forms)
    if time_ns > received_ns + compiled.max_future_ns:
        ahead = (time_ns - received_ns) / _NS_PER_S
        raise Invalid(Reason.TIMESTAMP_IN_FUTURE, f"timestamp {ahead:.0f}s ahead of ingest's clock")
    if time_ns < received_ns - compiled.max_age_ns:
        age = (received_ns - time_ns) / _NS_PER_S
        raise Invalid(Reason.TIMESTAMP_TOO_OLD, f"timestamp {age:.0f}s old, older than allowed")
    return time_ns
