"""The latest state's compact form (api.live.columns): whatever goes in comes back out, equal
and of the same type, including values that do not fit their column."""

from __future__ import annotations

import pytest

from api.core.readings import Value, typed
from api.live import columns
from api.live.columns import ProfileColumns
from device_profiles import load_profiles

PROFILES = load_profiles()
WATER = PROFILES["water_pipe"]  # number, integer and boolean fields
LIGHT = PROFILES["streetlight"]  # a state field


def _round_trip(profile_name: str, values: dict[str, Value]) -> dict[str, Value]:
    table = ProfileColumns(PROFILES[profile_name], 3)
    table.replace(1, values)
    return table.values(1)


@pytest.mark.parametrize(
    ("profile", "values"),
    [
        ("water_pipe", {"pressure": 301.5, "rssi": -97, "leakDetected": False}),
        ("water_pipe", {"pressure": -0.0, "leakDetected": True}),
        ("streetlight", {"powerState": "on", "doorOpen": True}),
        # What the contract's type does not describe is kept as stored, not converted.
        ("water_pipe", {"pressure": "n/a", "rssi": 2**70, "leakDetected": 1}),
        ("water_pipe", {"pressure": 300, "rssi": 3.5}),
    ],
)
def test_values_come_back_equal_and_of_their_type(profile: str, values: dict[str, Value]) -> None:
    out = _round_trip(profile, values)
    assert out == values
    assert {k: type(v) for k, v in out.items()} == {k: type(v) for k, v in values.items()}


def test_devices_do_not_share_values() -> None:
    table = ProfileColumns(WATER, 3)
    table.replace(0, {"pressure": 1.0, "rssi": -1})
    table.replace(2, {"pressure": 3.0, "leakDetected": True})
    assert table.values(0) == {"pressure": 1.0, "rssi": -1}
    assert table.values(1) == {}
    assert table.values(2) == {"pressure": 3.0, "leakDetected": True}


def test_replace_drops_what_the_new_reading_lacks_and_merge_keeps_it() -> None:
    table = ProfileColumns(WATER, 1)
    table.replace(0, {"pressure": 1.0, "rssi": "odd"})
    table.replace(0, {"flow": 2.0})
    assert table.values(0) == {"flow": 2.0}
    assert table.merge(0, {"pressure": 5.0}) is True
    assert table.values(0) == {"flow": 2.0, "pressure": 5.0}
    assert table.merge(0, {"pressure": 5.0}) is False  # the same again changes nothing


def test_fields_outside_the_contract_are_not_kept() -> None:
    table = ProfileColumns(WATER, 1)
    table.replace(0, {"pressure": 1.0, "firmware": "1.2"})
    assert table.merge(0, {"firmware": "1.3"}) is False
    assert table.values(0) == {"pressure": 1.0}


def test_text_past_the_table_bound_is_kept_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(columns, "MAX_CODES", 2)  # codes 1 and 2, then no more
    table = ProfileColumns(LIGHT, 4)
    for slot, state in enumerate(["on", "off", "dim", "on"]):
        table.replace(slot, {"powerState": state})
    assert [table.values(s)["powerState"] for s in range(4)] == ["on", "off", "dim", "on"]
    column = table.columns["powerState"]
    assert isinstance(column, columns.Codes)
    assert column.table[1:] == ["on", "off"]
    assert column.odd == {2: "dim"}
    table.replace(2, {"powerState": "off"})
    assert column.odd == {}  # a device's odd value goes once it has a regular one


@pytest.mark.parametrize(
    "raw",
    [
        # As InfluxDB's JSON gives them: a number field's 301.0 as 301, an integer field's 3 as
        # 3.0 after some paths; values outside the contract's type; absent fields.
        {"pressure": 301, "rssi": -97, "leakDetected": False},
        {"pressure": 301.5, "rssi": 3.0, "leakDetected": True},
        {"pressure": "n/a", "rssi": 2**70, "leakDetected": 1},
        {"pressure": True, "rssi": 3.5},
        {"flow": 0},
    ],
)
def test_loading_many_at_once_stores_what_typed_values_one_by_one_store(
    raw: dict[str, Value],
) -> None:
    """ProfileColumns.load (a start's load from the latest rows) against replace() with the
    values typed by the contract (every other load)."""
    one_by_one, at_once = ProfileColumns(WATER, 3), ProfileColumns(WATER, 3)
    for table in (one_by_one, at_once):
        table.replace(0, {"pressure": "odd before"})  # a column whose odd map is in use
    one_by_one.replace(2, {k: typed(WATER.fields[k], v) for k, v in raw.items()})
    one_by_one.replace(0, {k: typed(WATER.fields[k], v) for k, v in raw.items()})
    at_once.load([2, 0], {name: [value, value] for name, value in raw.items()})
    for slot in (0, 2):
        assert at_once.values(slot) == one_by_one.values(slot)
        assert [type(v) for v in at_once.values(slot).values()] == [
            type(v) for v in one_by_one.values(slot).values()
        ]
