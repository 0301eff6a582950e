"""Rollups combine exactly (api.core.rollups): for random devices in random districts with random
readings, the rollups of each district, combined, give what computing from the raw readings of
all the devices gives — outer(inner per device) as api.core.query.across_devices asks InfluxDB,
and counters' increases as api.core.counters computes them — for every aggregate rollups answer,
for any selection of districts."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.core import rollups as r
from api.core import spans
from api.core.counters import deltas
from api.core.query import Aggregate
from api.core.readings import Value
from device_profiles import FieldKind, FieldSpec, FieldType, Profile

W = (1_000_000, 2_000_000)  # the window
QUARTER = 100_000  # the keeper's quarter-hour, scaled like W
GAUGE = FieldSpec(type=FieldType.NUMBER, unit="W")
INTEGER = FieldSpec(type=FieldType.INTEGER)
COUNTER = FieldSpec(type=FieldType.NUMBER, kind=FieldKind.COUNTER)
STATE = FieldSpec(type=FieldType.STATE, values=("on", "off", "low"))
BOOLEAN = FieldSpec(type=FieldType.BOOLEAN)

Devices = dict[str, tuple[str, list[tuple[int, Value]]]]  # id -> district, readings


def _times() -> st.SearchStrategy[list[int]]:
    # Before, inside and after the window, sorted, distinct (one reading per time per device).
    return st.lists(st.integers(0, 3_000_000), max_size=8, unique=True).map(sorted)


def devices(values: st.SearchStrategy[Value]) -> st.SearchStrategy[Devices]:
    device = st.tuples(
        st.sampled_from(["North", "South", "East"]),
        _times().flatmap(
            lambda ts: st.lists(values, min_size=len(ts), max_size=len(ts)).map(
                lambda vs: list(zip(ts, vs, strict=True))
            )
        ),
    )
    return st.dictionaries(st.from_regex(r"D[0-9]{1,3}", fullmatch=True), device, max_size=12)


NUMBERS = st.floats(-1000, 1000, allow_nan=False).map(lambda x: round(x, 3))
COUNTS = st.floats(0, 1000, allow_nan=False).map(lambda x: round(x, 3))  # resets included


def inside(readings: Sequence[tuple[int, Value]]) -> list[Value]:
    return [v for t, v in readings if W[0] <= t < W[1]]


def from_raw(
    spec: FieldSpec, devs: Devices, agg: Aggregate, match: Value | None
) -> tuple[Value, int] | None:
    """The cell computed from the raw readings of the selected devices."""
    if agg.on_counter:
        total, contributing = 0.0, 0
        for _, readings in devs.values():
            before = [float(v) for t, v in readings if t < W[0] and not isinstance(v, str)]
            within = [(t, float(v)) for t, v in readings if W[0] <= t < W[1]]
            got = deltas(before[-1] if before else None, within, [W])[0]
            if got is not None:
                total += got
                contributing += 1
        return (total, contributing) if contributing else None
    per_device = [inside(readings) for _, readings in devs.values()]
    per_device = [vs for vs in per_device if vs]
    if not per_device:
        return None
    n = len(per_device)
    if match is not None:
        return sum(1 for vs in per_device if vs[-1] == match), n
    if agg is Aggregate.COUNT:
        return sum(len(vs) for vs in per_device), n
    means = [sum(float(v) for v in vs) / len(vs) for vs in per_device]  # type: ignore[arg-type]
    flat = [float(v) for vs in per_device for v in vs]  # type: ignore[arg-type]
    value = {
        Aggregate.MEAN: sum(means) / n,
        Aggregate.SUM: sum(means),
        Aggregate.MIN: min(flat),
        Aggregate.MAX: max(flat),
        Aggregate.SPREAD: max(means) - min(means),
    }[agg]
    return value, n


def from_rollups(
    spec: FieldSpec, devs: Devices, agg: Aggregate, match: Value | None
) -> tuple[Value, int] | None:
    """Each district's rollup from its own devices, then combined."""
    parts = []
    for district in {d for d, _ in devs.values()}:
        mine = {k: readings for k, (d, readings) in devs.items() if d == district}
        previous = {}
        for k, readings in mine.items():
            before = [float(v) for t, v in readings if t < W[0] and not isinstance(v, str)]
            if before:
                previous[k] = before[-1]
        # What the keeper runs (one pass, every grain); from_readings is checked against it.
        devices = [(previous.get(k), readings) for k, readings in mine.items()]
        (part,) = r.rollups_of_span(spec, devices, [W], QUARTER)
        assert part == r.from_readings(spec, mine, W, previous)
        parts.append(part)
    return r.value_of(r.combine(parts), spec, agg, match)


def same(a: tuple[Value, int] | None, b: tuple[Value, int] | None) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a[0], float) or isinstance(b[0], float):
        return a[1] == b[1] and float(a[0]) == pytest.approx(float(b[0]), rel=1e-9, abs=1e-9)
    return a == b


_NOT_GAUGE = (Aggregate.FIRST, Aggregate.LAST, Aggregate.DELTA, Aggregate.RATE)


@settings(max_examples=150, deadline=None)
@given(devices(NUMBERS), st.sampled_from([a for a in Aggregate if a not in _NOT_GAUGE]))
def test_gauges_combine_exactly(devs: Devices, agg: Aggregate) -> None:
    assert r.answers(GAUGE, agg, None)
    assert same(from_rollups(GAUGE, devs, agg, None), from_raw(GAUGE, devs, agg, None))


@settings(max_examples=100, deadline=None)
@given(devices(COUNTS), st.sampled_from([Aggregate.DELTA, Aggregate.MIN, Aggregate.COUNT]))
def test_counters_combine_exactly_with_resets(devs: Devices, agg: Aggregate) -> None:
    assert same(from_rollups(COUNTER, devs, agg, None), from_raw(COUNTER, devs, agg, None))


@settings(max_examples=100, deadline=None)
@given(devices(st.sampled_from(["on", "off", "low"])), st.sampled_from(["on", "off", "low"]))
def test_devices_whose_last_value_equals(devs: Devices, match: str) -> None:
    assert r.answers(STATE, Aggregate.COUNT, match)
    got = from_rollups(STATE, devs, Aggregate.COUNT, match)
    assert same(got, from_raw(STATE, devs, Aggregate.COUNT, match))


@settings(max_examples=50, deadline=None)
@given(devices(st.booleans()), st.booleans())
def test_booleans_equal(devs: Devices, match: bool) -> None:
    got = from_rollups(BOOLEAN, devs, Aggregate.COUNT, match)
    assert same(got, from_raw(BOOLEAN, devs, Aggregate.COUNT, match))


@settings(max_examples=50, deadline=None)
@given(devices(st.integers(-50, 50)))
def test_integer_fields_keep_their_type(devs: Devices) -> None:
    for agg in (Aggregate.MIN, Aggregate.MAX, Aggregate.SUM):
        got, want = from_rollups(INTEGER, devs, agg, None), from_raw(INTEGER, devs, agg, None)
        assert same(got, want)
        if got is not None and agg is not Aggregate.SUM:
            assert isinstance(got[0], int)


@settings(max_examples=60, deadline=None)
@given(devices(NUMBERS))
def test_stored_fields_read_back_as_written(devs: Devices) -> None:
    """to_fields → the stored point's columns → from_columns is the identity (as floats)."""
    profile = Profile.model_validate(
        {"profile": "p", "reporting_interval": "60s", "fields": {"x": {"type": "number"}}}
    )
    rollup = r.from_readings(GAUGE, {k: rd for k, (_, rd) in devs.items()}, W)
    stored = r.to_fields({"x": rollup}, profile)
    back = r.from_columns(list(stored), list(stored.values()), profile).get("x", r.FieldRollup())
    assert back == rollup


def test_what_rollups_do_not_answer() -> None:
    text = FieldSpec(type=FieldType.TEXT)
    assert not r.answers(GAUGE, Aggregate.FIRST, None)
    assert not r.answers(GAUGE, Aggregate.LAST, None)
    assert not r.answers(text, Aggregate.COUNT, "anything")
    assert not r.answers(STATE, Aggregate.COUNT, "unknown")
    assert not r.answers(GAUGE, Aggregate.DELTA, None)
    assert r.answers(text, Aggregate.COUNT, None)


def test_grains() -> None:
    utc, shanghai, paris = ZoneInfo("UTC"), ZoneInfo("Asia/Shanghai"), ZoneInfo("Europe/Paris")
    s = 1_000_000_000
    day0 = 1_700_006_400 * s  # a UTC midnight
    hours = [(day0 + k * 3600 * s, day0 + (k + 1) * 3600 * s) for k in range(5)]
    assert r.grain_of(hours, utc) == "1h"
    quarters = [(day0 + k * 900 * s, day0 + (k + 1) * 900 * s) for k in range(5)]
    assert r.grain_of(quarters, utc) == "15m"
    days = r.grain_windows("day", day0, day0 + 3 * 86400 * s, utc)
    assert r.grain_of(days, utc) == "day"
    assert r.grain_of(days, shanghai) is None  # UTC days are not the city's days there
    assert r.grain_of(r.grain_windows("day", day0, day0 + 3 * 86400 * s, paris), paris) == "day"
    shifted = [(b + 60 * s, e + 60 * s) for b, e in hours]
    assert r.grain_of(shifted, utc) is None
    assert r.grain_of([(day0, day0 + 7200 * s)], utc) is None


@settings(max_examples=80, deadline=None)
@given(devices(COUNTS), st.sampled_from([GAUGE, COUNTER, INTEGER]))
def test_one_pass_serves_every_grain(devs: Devices, spec: FieldSpec) -> None:
    """Quarters, groups of four and the whole span at once, each as if computed alone."""
    start = 0
    quarters = [(start + k * QUARTER, start + (k + 1) * QUARTER) for k in range(30)]
    hours = [(start + k * 4 * QUARTER, start + (k + 1) * 4 * QUARTER) for k in range(7)]
    windows = [*quarters, *hours, (start, start + 30 * QUARTER)]
    readings = {k: rd for k, (_, rd) in devs.items()}
    got = r.rollups_of_span(spec, [(None, rd) for rd in readings.values()], windows, QUARTER)
    for window, rollup in zip(windows, got, strict=True):
        previous = {}
        for k, rd in readings.items():
            before = [float(v) for t, v in rd if t < window[0] and not isinstance(v, str)]
            if before:
                previous[k] = before[-1]
        want = r.from_readings(spec, readings, window, previous)
        assert rollup.n == want.n and rollup.c == want.c and rollup.incn == want.incn
        for stat in ("sm", "mnm", "mxm", "lo", "hi", "inc"):
            a, b = getattr(rollup, stat), getattr(want, stat)
            assert (a is None) == (b is None), stat
            if a is not None:
                assert a == pytest.approx(b, rel=1e-9, abs=1e-9), stat


def _same(got: r.FieldRollup, want: r.FieldRollup) -> None:
    assert (got.n, got.c, got.incn, got.eq) == (want.n, want.c, want.incn, want.eq)
    for stat in ("sm", "mnm", "mxm", "lo", "hi", "inc"):
        a, b = getattr(got, stat), getattr(want, stat)
        assert (a is None) == (b is None), stat
        if a is not None:
            assert a == pytest.approx(b, rel=1e-9, abs=1e-9), stat


@settings(max_examples=120, deadline=None)
@given(
    devices(COUNTS),
    st.sampled_from([GAUGE, COUNTER, INTEGER, STATE]),
    st.lists(st.integers(1, 29), max_size=3, unique=True).map(sorted),
    st.dictionaries(st.from_regex(r"D[0-9]{1,3}", fullmatch=True), COUNTS, max_size=6),
)
def test_a_day_from_its_ledger_and_later_spans_is_the_day_read_whole(
    devs: Devices, spec: FieldSpec, folds: list[int], previous: dict[str, float]
) -> None:
    """What the keeper's ledger does (api.compute.ledger): a day's devices' spans folded at
    some quarter boundaries (each later span read alone, its counters starting from the
    ledger's last readings), the rest added, kept in columns (api.core.spans): the day's rollup
    is what one pass over the whole day gives, with readings outside the day, counter resets,
    devices with only a previous reading, and state values (whose last value counts)
    included."""
    day = (0, 30 * QUARTER)
    if spec.type is FieldType.STATE:
        devs = {
            k: (d, [(t, ("on", "off", "low")[int(float(v)) % 3]) for t, v in rd])
            for k, (d, rd) in devs.items()
        }
    readings = {k: rd for k, (_, rd) in devs.items()}
    before = previous if spec.effective_kind is FieldKind.COUNTER else {}
    whole = r.rollups_of_span(
        spec, [(before.get(k), rd) for k, rd in readings.items()], [day], QUARTER
    )[0]
    cuts = [day[0], *(k * QUARTER for k in folds), day[1]]
    held = spans.columns_of(spec, {d: spans.DeviceSpan(last=v) for d, v in before.items()})
    for begin, end in itertools.pairwise(cuts):
        # Read alone, as the keeper reads the day after its ledger: previous from the ledger.
        last = {d: s.last for d, s in held.items() if s.last is not None}
        span = spans.device_spans(
            spec, [(k, last.get(k), rd) for k, rd in readings.items()], [begin, end]
        )[0]
        held = spans.extend(held, span)
    assert len(held) == len({d for d, s in held.items()})
    _same(spans.rollup_of_spans(spec, held), whole)
