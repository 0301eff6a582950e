"""Rollups (wire.rollups): what one (district, window) keeps of each field, how the rollups of
disjoint districts combine, and which aggregate across devices they answer, exactly as
api.core.query.across_devices and the counter path of api.compute.aggregates compute it from the
readings (outer(inner per device) per window).

Exact by combination because every kept number is a sum, a count, a min or a max over devices,
and districts are disjoint sets of devices: the mean of the devices' means of several districts
is Σ(sum of means) / Σ(devices); a spread between the devices' means is max(max of means) −
min(min of means); counts and sums add. What a per-device value does not combine into
(first/last of readings, `equals` on text fields) is not kept: `answers` says so and the caller
computes those from the readings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from api.core.counters import deltas
from api.core.query import Aggregate
from api.core.readings import Value, aggregate_value
from api.core.times import NS_PER_S
from api.core.windows import Calendar, Window, calendar_windows
from device_profiles import FieldKind, FieldSpec, FieldType, Profile
from wire.rollups import GRAINS

NUMERIC = (FieldType.NUMBER, FieldType.INTEGER)
# Per point, not per field: the signatures of the marks read before computing, and when.
POINT_FIELDS = ("sig_s", "sig_n", "lsig_s", "lsig_n", "at")


@dataclass(slots=True)
class FieldRollup:
    """One field over one group of devices and one window."""

    n: int = 0  # devices with at least one reading of the field
    c: int = 0  # readings
    sm: float = 0.0  # sum of the devices' means (numeric gauges)
    mnm: float | None = None  # min of the devices' means
    mxm: float | None = None  # max of the devices' means
    lo: float | None = None  # min reading (numeric)
    hi: float | None = None  # max reading (numeric)
    inc: float = 0.0  # summed increases (counters), resets counted from 0
    incn: int = 0  # devices with an increase in the window
    eq: dict[str, int] = field(default_factory=dict)  # devices whose last value was the key


def _lower(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _upper(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def combine(parts: Iterable[FieldRollup]) -> FieldRollup:
    """The rollup of the union of disjoint groups of devices (districts)."""
    out = FieldRollup()
    for p in parts:
        out.n += p.n
        out.c += p.c
        out.sm += p.sm
        out.mnm, out.mxm = _lower(out.mnm, p.mnm), _upper(out.mxm, p.mxm)
        out.lo, out.hi = _lower(out.lo, p.lo), _upper(out.hi, p.hi)
        out.inc += p.inc
        out.incn += p.incn
        for value, devices in p.eq.items():
            out.eq[value] = out.eq.get(value, 0) + devices
    return out


def equals_key(value: Value) -> str:
    """How an `equals` value is named in a rollup's field key."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def eq_values(spec: FieldSpec) -> tuple[Value, ...]:
    """The values whose devices are counted per window: a state's allowed values, a boolean's
    two; none for text (any string: not countable in advance)."""
    if spec.type is FieldType.STATE:
        return tuple(spec.values or ())
    if spec.type is FieldType.BOOLEAN:
        return (True, False)
    return ()


def answers(spec: FieldSpec, agg: Aggregate, match: Value | None) -> bool:
    """Whether rollups answer `agg` of this field (with `equals` = match) exactly."""
    if agg in (Aggregate.FIRST, Aggregate.LAST):
        return False
    if match is not None:
        return equals_key(match) in {equals_key(v) for v in eq_values(spec)}
    if agg.on_counter:
        return spec.effective_kind is FieldKind.COUNTER
    if agg is Aggregate.COUNT:
        return True
    return spec.type in NUMERIC


def value_of(
    rollup: FieldRollup, spec: FieldSpec, agg: Aggregate, match: Value | None
) -> tuple[Value, int] | None:
    """The cell (value, devices) the readings behind `rollup` give, or None where the existing
    path has no row (no device contributed). `answers(spec, agg, match)` must hold."""
    if match is not None:
        return (rollup.eq.get(equals_key(match), 0), rollup.n) if rollup.n else None
    if agg.on_counter:
        return (rollup.inc, rollup.incn) if rollup.incn else None
    if rollup.n == 0:
        return None
    if agg is Aggregate.COUNT:
        return rollup.c, rollup.n
    value: float | None
    if agg is Aggregate.MEAN:
        value = rollup.sm / rollup.n
    elif agg is Aggregate.SUM:
        value = rollup.sm
    elif agg is Aggregate.MIN:
        value = rollup.lo
    elif agg is Aggregate.MAX:
        value = rollup.hi
    elif agg is Aggregate.SPREAD:
        value = None if rollup.mxm is None or rollup.mnm is None else rollup.mxm - rollup.mnm
    else:
        raise ValueError(f"{agg.value} is not answered from rollups")
    return None if value is None else (aggregate_value(agg, spec, value), rollup.n)


# --- the reference computation, from readings -------------------------------------------------


def from_readings(
    spec: FieldSpec,
    readings: Mapping[str, Sequence[tuple[int, Value]]],
    window: Window,
    previous: Mapping[str, float] | None = None,
) -> FieldRollup:
    """The rollup of one window from each device's readings (time-ordered): what the keeper's
    InfluxDB statements compute, in Python (tests and small data). `previous`: a counter's last
    reading before the window, per device."""
    out = FieldRollup()
    counter = spec.effective_kind is FieldKind.COUNTER
    begin, end = window
    for device, series in readings.items():
        inside = [(t, v) for t, v in series if begin <= t < end]
        if counter:
            before = (previous or {}).get(device)
            numbers = [(t, float(v)) for t, v in inside if not isinstance(v, str)]
            delta = deltas(before, numbers, [window])[0]
            if delta is not None:
                out.inc += delta
                out.incn += 1
        if not inside:
            continue
        out.n += 1
        out.c += len(inside)
        values = [v for _, v in inside]
        if spec.type in NUMERIC:
            numbers_only = [float(v) for v in values if not isinstance(v, str)]
            mean = sum(numbers_only) / len(numbers_only)
            if not counter:
                out.sm += mean
                out.mnm, out.mxm = _lower(out.mnm, mean), _upper(out.mxm, mean)
            out.lo, out.hi = _lower(out.lo, min(numbers_only)), _upper(out.hi, max(numbers_only))
        if eq_values(spec):
            key = equals_key(values[-1])
            out.eq[key] = out.eq.get(key, 0) + 1
    return out


# --- as stored ---------------------------------------------------------------------------------


def field_keys(name: str, spec: FieldSpec) -> list[str]:
    """The rollup's field keys for one field of the profile."""
    stats = ["n", "c"]
    if spec.type in NUMERIC:
        stats += ["lo", "hi"]
        if spec.effective_kind is FieldKind.COUNTER:
            stats += ["inc", "incn"]
        else:
            stats += ["sm", "mnm", "mxm"]
    return [f"{name}.{s}" for s in stats] + [f"{name}.eq.{equals_key(v)}" for v in eq_values(spec)]


def to_fields(rollups: Mapping[str, FieldRollup], profile: Profile) -> dict[str, float]:
    """Field key → number for a point (every number a float: one type per field key)."""
    out: dict[str, float] = {}
    for name, r in rollups.items():
        spec = profile.fields[name]
        for key in field_keys(name, spec):
            stat = key[len(name) + 1 :]
            if stat.startswith("eq."):
                out[key] = float(r.eq.get(stat[3:], 0))
                continue
            value = getattr(r, stat)
            if value is not None:
                out[key] = float(value)
    return out


def from_columns(
    columns: Sequence[str], row: Sequence[Any], profile: Profile
) -> dict[str, FieldRollup]:
    """The fields' rollups from a row whose columns are field keys (a stored point, or the
    keeper's statements, which name their columns alike); fields without a column are left
    out. Numbers only: a null column (no device reported) stays the default."""
    out: dict[str, FieldRollup] = {}
    for column, value in zip(columns, row, strict=True):
        name, dot, stat = column.partition(".")
        if not dot or name not in profile.fields or value is None:
            continue
        r = out.setdefault(name, FieldRollup())
        if stat.startswith("eq."):
            r.eq[stat[3:]] = int(value)
        elif stat in ("n", "c", "incn"):
            setattr(r, stat, int(value))
        elif stat in ("sm", "mnm", "mxm", "lo", "hi", "inc"):
            setattr(r, stat, float(value))
    return out


# --- grains -------------------------------------------------------------------------------------


def grain_windows(grain: str, start_ns: int, end_ns: int, day_zone: ZoneInfo) -> list[Window]:
    """The grain's windows overlapping [start, end)."""
    if grain == "day":
        return calendar_windows(start_ns, end_ns, Calendar.DAY, day_zone)
    width = GRAINS[grain] * NS_PER_S
    first = start_ns // width * width
    return [(t, t + width) for t in range(first, end_ns, width)]


def grain_of(windows: Sequence[Window], day_zone: ZoneInfo) -> str | None:
    """The grain whose windows these are exactly, or None (other widths, offsets or zones)."""
    if not windows:
        return None
    width = windows[0][1] - windows[0][0]
    for grain, seconds in GRAINS.items():
        if grain == "day":
            continue
        step = seconds * NS_PER_S
        if width == step and all(b % step == 0 and e - b == step for b, e in windows):
            return grain
    days = grain_windows("day", windows[0][0], windows[-1][1], day_zone)
    if list(windows) == days and _starts_at_midnight(windows[0][0], day_zone):
        return "day"
    return None


def _starts_at_midnight(start_ns: int, zone: ZoneInfo) -> bool:
    local = datetime.fromtimestamp(start_ns / NS_PER_S, zone)
    return (local.hour, local.minute, local.second, local.microsecond) == (0, 0, 0, 0)


# --- computing them from readings, all grains in one pass ----------------------------------------


class _Acc:
    """One device's readings of one field in one window: sum, count, min, max, last."""

    __slots__ = ("count", "hi", "last", "lo", "total")

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0
        self.lo: float | None = None
        self.hi: float | None = None
        self.last: Value | None = None

    def add(self, value: Value, numeric: bool) -> None:
        self.count += 1
        self.last = value
        if numeric and not isinstance(value, str):
            x = float(value)
            self.total += x
            self.lo = x if self.lo is None or x < self.lo else self.lo
            self.hi = x if self.hi is None or x > self.hi else self.hi


def rollups_of_span(
    spec: FieldSpec,
    devices: Iterable[tuple[float | None, Sequence[tuple[int, Value]]]],
    windows: Sequence[Window],
    quarter_ns: int,
) -> list[FieldRollup]:
    """One field's rollup of each window, from every device's (previous reading, time-ordered
    readings): one pass over the readings serves the windows of every grain at once. `windows`
    are whole quarters (`quarter_ns`, 15 minutes) of a grid starting at the earliest of them;
    readings outside them are not counted."""
    numeric = spec.type in NUMERIC
    counter = spec.effective_kind is FieldKind.COUNTER
    counting = bool(eq_values(spec))
    out = [FieldRollup() for _ in windows]
    if not windows:
        return out
    origin = min(b for b, _ in windows)
    members = _members(windows, origin, quarter_ns)
    quarters = len(members)
    for previous, readings in devices:
        per: dict[int, _Acc] = {}
        increases: dict[int, float] = {}
        last = previous
        for t, v in readings:
            k = (t - origin) // quarter_ns
            if not 0 <= k < quarters:
                continue
            for i in members[k]:
                acc = per.get(i)
                if acc is None:
                    acc = per[i] = _Acc()
                acc.add(v, numeric)
            if counter and not isinstance(v, str):
                x = float(v)
                if last is not None:
                    step = x - last if x >= last else x  # a reset counts from 0
                    for i in members[k]:
                        increases[i] = increases.get(i, 0.0) + step
                last = x
        for i, inc in increases.items():
            out[i].inc += inc
            out[i].incn += 1
        for i, device in per.items():
            _fold(out[i], device, numeric=numeric, counter=counter, counting=counting)
    return out


def _members(windows: Sequence[Window], origin: int, quarter_ns: int) -> list[list[int]]:
    """The windows (of every grain) each quarter of the span belongs to."""
    members: list[list[int]] = [
        [] for _ in range((max(e for _, e in windows) - origin) // quarter_ns)
    ]
    for i, (b, e) in enumerate(windows):
        for k in range((b - origin) // quarter_ns, (e - origin) // quarter_ns):
            members[k].append(i)
    return members


def _fold(
    rollup: FieldRollup, device: _Acc, *, numeric: bool, counter: bool, counting: bool
) -> None:
    """One device's window into its group's rollup."""
    rollup.n += 1
    rollup.c += device.count
    if numeric:
        rollup.lo, rollup.hi = _lower(rollup.lo, device.lo), _upper(rollup.hi, device.hi)
        if not counter:
            mean = device.total / device.count
            rollup.sm += mean
            rollup.mnm, rollup.mxm = _lower(rollup.mnm, mean), _upper(rollup.mxm, mean)
    if counting and device.last is not None:
        key = equals_key(device.last)
        rollup.eq[key] = rollup.eq.get(key, 0) + 1
