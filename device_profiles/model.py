"""The device-profile contract shared by ingest, the API and the simulators.

A profile says what one family of devices sends: the topic it publishes on, how often, which
fields with which type, unit and valid range, and which figures an operator wants summed up per
district. Profiles are data (YAML files); this module is their schema.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator
from pydantic.dataclasses import dataclass

# Identifiers that become InfluxDB measurement or field names: letters first, no characters that
# line protocol or InfluxQL would need to escape, so they can never change the meaning of a line.
IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
# A reading's tags (ingest.encode) and InfluxDB's time column.
RESERVED_FIELD_NAMES = frozenset({"device_id", "district", "time"})

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str | float | int) -> float:
    """Seconds from `90`, `90s`, `15m`, `1h`, `30d`; raises ValueError with the offending text."""
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        return float(text)
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 1h, 30d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


Duration = Annotated[float, Field(ge=0)]


class FieldType(StrEnum):
    NUMBER = "number"  # stored as float, always, so a later fractional value never conflicts
    INTEGER = "integer"
    BOOLEAN = "boolean"
    STATE = "state"  # one of a closed set of strings
    TEXT = "text"


class FieldKind(StrEnum):
    GAUGE = "gauge"
    COUNTER = "counter"  # monotonic; resets to 0 are expected (meter replaced, overflow)
    STATE = "state"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Strict):
    type: FieldType
    unit: str | None = None
    kind: FieldKind | None = None
    range: tuple[float, float] | None = None
    values: tuple[str, ...] | None = None
    required: bool = False
    max_length: int = Field(default=256, ge=1, le=4096)
    # Values a firmware sends to mean "no data" (-9999, 65535): the field is left out of the
    # reading and counted, never stored as a measurement.
    sentinels: tuple[float | str, ...] = ()
    description: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> FieldSpec:
        numeric = self.type in (FieldType.NUMBER, FieldType.INTEGER)
        if self.range is not None:
            if not numeric:
                raise ValueError("range is only for number and integer fields")
            if self.range[0] > self.range[1]:
                raise ValueError(f"range {list(self.range)} has min above max")
        if self.type is FieldType.STATE and not self.values:
            raise ValueError("a state field lists its allowed values")
        if self.type is not FieldType.STATE and self.values is not None:
            raise ValueError("values are only for state fields")
        if self.kind is FieldKind.COUNTER and not numeric:
            raise ValueError("a counter is a number or an integer")
        return self

    @property
    def effective_kind(self) -> FieldKind:
        if self.kind is not None:
            return self.kind
        numeric = self.type in (FieldType.NUMBER, FieldType.INTEGER)
        return FieldKind.GAUGE if numeric else FieldKind.STATE


TimestampForm = Literal["epoch_s", "epoch_ms", "rfc3339"]


class TimestampPolicy(_Strict):
    field: str = "ts"
    forms: tuple[TimestampForm, ...] = ("epoch_s", "epoch_ms", "rfc3339")
    # Readings further in the future than this are a device clock fault, not data.
    max_future_skew: Duration = 300.0
    # Older readings are rejected: buffered uploads after an outage are fine, 1970 is not.
    max_age: Duration = 30 * 86400.0
    # A reading without a timestamp: stamp it with the time ingest received it, or reject it.
    # Receive-time stamping is not idempotent across redelivery (see README).
    missing: Literal["receive_time", "reject"] = "receive_time"

    @field_validator("max_future_skew", "max_age", mode="before")
    @classmethod
    def _duration(cls, value: str | float) -> float:
        return parse_duration(value)


class SummaryOp(StrEnum):
    SUM = "sum"
    MEAN = "mean"
    MIN = "min"
    MAX = "max"
    COUNT = "count"  # devices whose latest value equals `equals` (or that have the field at all)


class SummarySpec(_Strict):
    name: str
    op: SummaryOp
    field: str
    equals: str | float | bool | None = None
    description: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError(f"summary name {value!r} must match {IDENTIFIER.pattern}")
        return value


class AlarmOp(StrEnum):
    ABOVE = "above"
    BELOW = "below"
    EQUALS = "equals"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlarmRule(_Strict):
    """Raise when `field` is `op` `threshold` for at least `duration`; clear only once it is back
    past `clear` (hysteresis), so a value hovering at the threshold does not flap."""

    name: str
    field: str
    op: AlarmOp
    threshold: float | str | bool
    clear: float | None = None
    duration: Duration = 0.0
    severity: Severity = Severity.WARNING
    description: str | None = None

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, value: str | float) -> float:
        return parse_duration(value)

    @model_validator(mode="after")
    def _hysteresis(self) -> AlarmRule:
        if self.clear is None or not isinstance(self.threshold, int | float):
            return self
        if self.op is AlarmOp.ABOVE and self.clear > self.threshold:
            raise ValueError("an 'above' alarm clears at or below its threshold")
        if self.op is AlarmOp.BELOW and self.clear < self.threshold:
            raise ValueError("a 'below' alarm clears at or above its threshold")
        return self


class SignalName(StrEnum):
    """Signals the API computes from stored readings on a schedule (api.foresight); a profile's
    `signals` rules raise alarms on them."""

    # Water: the rise of a node's minimum night flow (02:00-04:00) over its previous week's, as
    # a share of the district's minimum night flow, held two nights running (a new leak).
    NIGHT_FLOW_RISE = "night_flow_rise"
    # Water: pressure below the node's usual for the hour (kPa) while its flow is above it.
    BURST = "burst"
    # Lamps, per day: share of daytime readings lit (sun up at the pole, astral).
    LIT_BY_DAY = "lit_by_day"
    # Lamps, per night: share of night-time readings dark.
    DARK_BY_NIGHT = "dark_by_night"
    # Lamps, per day: median power drawn while switched off (W).
    POWER_WHILE_OFF = "power_while_off"
    # Lamps, per night: how far the lamp's full power moved from its first week's, against how
    # far its district peers' moved (a share: 0.1 is 10 %).
    POWER_DRIFT = "power_drift"
    # Every device: its data-quality score, 0-1.
    QUALITY_SCORE = "quality_score"


class SignalRule(_Strict):
    """Raise an alarm on a device when `signal` is `op` `threshold`; clear when it no longer is."""

    name: str
    signal: SignalName
    op: Literal[AlarmOp.ABOVE, AlarmOp.BELOW]
    threshold: float
    severity: Severity = Severity.WARNING
    description: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError(f"signal rule name {value!r} must match {IDENTIFIER.pattern}")
        return value


class Profile(_Strict):
    profile: str
    description: str = ""
    reporting_interval: Duration
    timestamp: TimestampPolicy = TimestampPolicy()
    # A reading with one bad field: reject the whole reading (default), or store the good fields
    # and dead-letter the bad one. Either way the rejection is recorded with the field's name.
    on_invalid_field: Literal["reject_reading", "drop_field"] = "reject_reading"
    # A field the profile does not declare (a firmware update adding one): `report` stores the
    # reading and records the field (counted per profile, with a device and a sample value, so
    # an operator can extend the profile); `reject` dead-letters the reading (unknown_field);
    # `ignore` drops the field silently.
    unknown_fields: Literal["ignore", "report", "reject"] = "report"
    fields: dict[str, FieldSpec]
    summary: tuple[SummarySpec, ...] = ()
    alarms: tuple[AlarmRule, ...] = ()
    # Alarm rules on the computed signals (api.foresight); none by default.
    signals: tuple[SignalRule, ...] = ()
    # Noisy gauges whose value never repeats for long on a healthy device: a run of identical
    # readings there is a stuck sensor (data quality).
    stuck_fields: tuple[str, ...] = ()

    @field_validator("profile")
    @classmethod
    def _profile_name(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError(f"profile name {value!r} must match {IDENTIFIER.pattern}")
        return value

    @field_validator("reporting_interval", mode="before")
    @classmethod
    def _interval(cls, value: str | float) -> float:
        return parse_duration(value)

    @field_validator("fields")
    @classmethod
    def _field_names(cls, value: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        if not value:
            raise ValueError("a profile declares at least one field")
        for name in value:
            if not IDENTIFIER.match(name):
                raise ValueError(f"field name {name!r} must match {IDENTIFIER.pattern}")
            if name in RESERVED_FIELD_NAMES:
                # InfluxDB's columns: a field named like a reading's tag comes back with it,
                # the tag renamed `district_1`, in every `SELECT *`; a field named time is
                # dropped by InfluxDB 1.6 without a word (the write succeeds; measured).
                raise ValueError(
                    f"field name {name!r} is reserved ({', '.join(sorted(RESERVED_FIELD_NAMES))})"
                )
        return value

    @model_validator(mode="after")
    def _references(self) -> Profile:
        if self.timestamp.field in self.fields:
            raise ValueError(f"timestamp field {self.timestamp.field!r} is also a data field")
        for item in self.summary:
            if item.field not in self.fields:
                raise ValueError(f"summary {item.name!r} names unknown field {item.field!r}")
        for rule in self.alarms:
            if rule.field not in self.fields:
                raise ValueError(f"alarm {rule.name!r} names unknown field {rule.field!r}")
        names = [rule.name for rule in self.alarms] + [rule.name for rule in self.signals]
        if len(set(names)) != len(names):
            raise ValueError("alarm and signal rule names must be distinct within a profile")
        for name in self.stuck_fields:
            if name not in self.fields:
                raise ValueError(f"stuck_fields names unknown field {name!r}")
        return self

    @property
    def measurement(self) -> str:
        """The InfluxDB measurement holding this profile's readings."""
        return self.profile

    def field_types(self) -> dict[str, str]:
        """Each field's type, in the profile's order (the latest rows' keys: wire.latest)."""
        return {name: spec.type.value for name, spec in self.fields.items()}


# Device ids and district names become InfluxDB tag values and MQTT topic levels. Keeping them to
# a conservative alphabet means no line-protocol metacharacter and no MQTT wildcard can ever reach
# either; the encoder escapes regardless.
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
DISTRICT = re.compile(r"^[^\W_][\w .'-]{0,63}$")


class VariantField(_Strict):
    """How one vendor field maps onto the canonical profile."""

    to: str
    unit: str | None = None  # the vendor's unit; converted to the canonical field's unit
    values: dict[str, str | float | bool] | None = None  # vendor value → canonical value


class Variant(_Strict):
    """A vendor's firmware dialect of a profile: its field names (or dotted paths into nested
    objects), units and value spellings. Readings land in the canonical measurement, canonically.
    Canonical names in a payload are accepted as they are."""

    variant: str
    profile: str
    description: str = ""
    timestamp_field: str | None = None
    fields: dict[str, VariantField]

    @field_validator("variant")
    @classmethod
    def _variant_name(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError(f"variant name {value!r} must match {IDENTIFIER.pattern}")
        return value


# A registry row: a slotted dataclass that pydantic validates, not a model. At 100,000 devices
# a model held 560 B a device with its id and the registry's dict entry (its __dict__ and
# fields-set kept per instance), this 296 (tracemalloc); ingest and every API replica hold one.
@dataclass(frozen=True, slots=True, config=ConfigDict(extra="forbid"))
class Device:
    device_id: str
    profile: str
    district: str
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    address: str = ""
    variant: str = ""  # a vendor variant of the profile, if the device speaks one

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, value: str) -> str:
        if not DEVICE_ID.match(value):
            raise ValueError(f"device id {value!r} must match {DEVICE_ID.pattern}")
        return value

    @field_validator("district")
    @classmethod
    def _district(cls, value: str) -> str:
        if not DISTRICT.match(value) or value != value.strip():
            raise ValueError(f"district {value!r} must match {DISTRICT.pattern}")
        return value


DEVICE = TypeAdapter(Device)  # validates a registry row (Device is not a model)
