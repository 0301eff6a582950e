"""The SensorThings `$filter` path without servers: whatever text arrives, parsing ends in a tree
or a StaError (a 400), never another exception; and every value a client writes reaches InfluxQL
only as a bound parameter (properties drawn by hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.sta.errors import StaError
from api.sta.filtering import parse_filter
from api.sta.pushdown import Condition, translate
from device_profiles import DEFAULT_PROFILES, load_profiles

PROFILES = load_profiles(DEFAULT_PROFILES)
STATE = PROFILES["streetlight"].fields["powerState"]
NUMBER = PROFILES["streetlight"].fields["powerConsumption"]


def odata_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_any_text_parses_or_is_refused_with_a_message(text: str) -> None:
    try:
        parse_filter(text)
    except StaError as exc:
        assert exc.status == 400 and exc.detail


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_a_string_literal_only_ever_travels_bound(text: str) -> None:
    condition = Condition("powerState", STATE)
    where = translate(parse_filter(f"result eq {odata_string(text)}"), condition)
    assert where == '"powerState" = $f0'
    assert condition.params == {"f0": text}


@given(
    st.one_of(st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False)),
    st.sampled_from(["eq", "ne", "lt", "le", "gt", "ge"]),
)
def test_a_number_only_ever_travels_bound(number: float, op: str) -> None:
    condition = Condition("powerConsumption", NUMBER)
    where = translate(parse_filter(f"result {op} {number!r}".replace("e+", "e")), condition)
    assert where.startswith('"powerConsumption" ') and where.endswith("$f0")
    assert condition.params["f0"] == pytest.approx(float(number))


@given(st.integers(50, 5000))
def test_deep_nesting_is_refused_not_recursed(depth: int) -> None:
    with pytest.raises(StaError, match=r"nests deeper|longer than|tokens"):
        parse_filter("(" * depth + "result gt 1" + ")" * depth)
    with pytest.raises(StaError, match=r"nests deeper|longer than|tokens"):
        parse_filter("not " * depth + "result gt 1")


def test_not_is_pushed_down_to_the_comparisons() -> None:
    condition = Condition("powerConsumption", NUMBER)
    tree = parse_filter("not (result lt 5 or result ge 10)")
    assert translate(tree, condition) == '("powerConsumption" >= $f0 AND "powerConsumption" < $f1)'
    assert condition.params == {"f0": 5.0, "f1": 10.0}
