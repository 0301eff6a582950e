"""ingest.compiled against ingest.validate: on readings generated from every profile — good ones,
and ones with a wrong type, a value out of range or not finite, a sentinel, an unknown key, a
missing field, a timestamp out of bounds — the generated function accepts only what validate
accepts whole, with the same time and values, and its encoded fields are what ReadingEncoder
writes for them. Fakes only."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_profiles import FieldSpec, FieldType, Profile, load_profiles
from ingest.compiled import compile_profile
from ingest.encode import ReadingEncoder
from ingest.stages import Enriched, Reading
from ingest.validate import CompiledProfile, validate
from wire.lineproto import parse_line

PROFILES = load_profiles()
NOW_NS = time.time_ns()
ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.sampled_from([-9999, 65535, "n/a", "on", "ok", 0, 1.0, "a\nb", []]),
)


def _good(spec: FieldSpec) -> st.SearchStrategy[Any]:
    if spec.type is FieldType.NUMBER:
        lo, hi = spec.range or (-1e9, 1e9)
        return st.one_of(st.floats(lo, hi), st.integers(int(lo) + 1, int(hi)))
    if spec.type is FieldType.INTEGER:
        lo, hi = spec.range or (-(10**9), 10**9)
        return st.integers(int(lo), int(hi))
    if spec.type is FieldType.BOOLEAN:
        return st.booleans()
    if spec.type is FieldType.STATE:
        return st.sampled_from(list(spec.values or ()))
    return st.text(max_size=spec.max_length)


def _clean(spec: FieldSpec) -> Any:
    lo, hi = spec.range or (0, 10)
    return {
        FieldType.NUMBER: (lo + hi) / 2,
        FieldType.INTEGER: int(lo),
        FieldType.BOOLEAN: True,
        FieldType.STATE: (spec.values or ("",))[0],
        FieldType.TEXT: "x",
    }[spec.type]


@st.composite
def readings(draw: st.DrawFn, profile: Profile) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for name, spec in profile.fields.items():
        if spec.required or draw(st.booleans()):
            obj[name] = draw(_good(spec) if draw(st.integers(0, 9)) else ODD)
        elif draw(st.integers(0, 20)) == 0:
            obj.pop(name, None)
    offset = draw(st.sampled_from([0, 1, -10, 10**6, -(10**7), 4 * 10**9, 10**11]))
    ts = draw(
        st.sampled_from(
            [
                None,
                NOW_NS // 10**9 - offset,
                NOW_NS // 10**6 - offset * 1000,
                "2020-01-01T00:00:00Z",
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW_NS // 10**9 - offset)),
                "garbage",
            ]
        )
    )
    if ts is not None:
        obj[profile.timestamp.field] = ts
    if draw(st.integers(0, 9)) == 0:
        obj[draw(st.sampled_from(["extra", "device_id"]))] = draw(ODD)
    return obj


@pytest.mark.parametrize("name", sorted(PROFILES))
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_accepts_only_what_validate_accepts_whole(name: str, data: st.DataObject) -> None:
    profile = PROFILES[name]
    fast = compile_profile(profile)
    assert fast is not None
    obj = data.draw(readings(profile))
    slow = validate(CompiledProfile.compile(profile), "D-1", obj, NOW_NS)
    accepted = fast(obj, "D-1", NOW_NS)
    if accepted is None:
        return
    assert isinstance(slow, Reading), (obj, slow)
    assert (slow.dropped, slow.sentinels, slow.unknown) == ((), 0, ())
    time_ns, fields, encoded = accepted
    assert (time_ns, fields) == (slow.time_ns, slow.fields)
    assert {k: type(v) for k, v in fields.items()} == {k: type(v) for k, v in slow.fields.items()}
    reading = Enriched(name, "D-1", "north", time_ns, fields)
    encoder = ReadingEncoder()
    assert parse_line(encoder.line(reading, encoded)) == parse_line(encoder.encode(reading))
    # dedupe's digest of the reading is the same whichever path it took (ingest.pipeline)
    assert encoder.fields_in_order(slow.fields, profile.fields) == encoded


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_a_clean_reading_takes_the_compiled_path(name: str) -> None:
    """Not a test that cannot fail: the fast path must not refuse what it exists for."""
    profile = PROFILES[name]
    fast = compile_profile(profile)
    assert fast is not None
    obj: dict[str, Any] = {profile.timestamp.field: NOW_NS // 10**6}
    for field, spec in profile.fields.items():
        obj[field] = _clean(spec)
    assert fast(obj, "D-1", NOW_NS) is not None
