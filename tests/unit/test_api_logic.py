"""Pure logic of the API: times, durations, buckets, InfluxQL building, typing, summary figures."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.compute.summary import figure
from api.core.query import Aggregate, history, latest_reading, latest_readings
from api.core.readings import (
    Reading,
    Value,
    aggregate_value,
    reading_from_row,
    readings_by_device,
    typed,
)
from api.core.scrub import Scrubber
from api.core.times import (
    NS_PER_S,
    bucket_count,
    format_rfc3339,
    parse_rfc3339,
    parse_whole_seconds,
)
from common.influx import Series, parse_query
from device_profiles import FieldSpec, FieldType, SummaryOp, SummarySpec, load_profiles

PROFILES = load_profiles()
STREETLIGHT = PROFILES["streetlight"]
WATER = PROFILES["water_pipe"]

HOSTILE = ["x' OR 1=1", '"; DROP DATABASE citysense', 'a" OR "1"="1', "$since", "\\", "'"]


# --- times -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("2024-05-01T12:00:00Z", 1714564800 * NS_PER_S),
        ("2024-05-01T12:00:00.5Z", 1714564800 * NS_PER_S + 500_000_000),
        ("2024-05-01T12:00:00.123456789Z", 1714564800 * NS_PER_S + 123_456_789),
        ("2024-05-01T20:00:00+08:00", 1714564800 * NS_PER_S),
        ("2024-05-01t11:30:00-00:30", 1714564800 * NS_PER_S),
        ("2024-05-01 12:00:00z", 1714564800 * NS_PER_S),
    ],
)
def test_parse_rfc3339(text: str, nanos: int) -> None:
    assert parse_rfc3339(text) == nanos


@pytest.mark.parametrize(
    "text",
    [
        "2024-05-01",
        "2024-05-01T12:00:00",  # no offset: ambiguous, RFC 3339 requires one
        "2024-13-01T00:00:00Z",
        "2024-02-30T00:00:00Z",
        "1714564800",
        "2024-05-01T12:00:00.1234567891Z",
        "2024-05-01T12:00:00Z' OR '1'='1",
        "now()",
        "",
    ],
)
def test_parse_rfc3339_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"RFC 3339|valid date-time"):
        parse_rfc3339(text)


def test_unencoded_plus_gets_a_hint() -> None:
    with pytest.raises(ValueError, match="%2B"):
        parse_rfc3339("2024-05-01T20:00:00 08:00")


def test_format_rfc3339() -> None:
    assert format_rfc3339(0) == "1970-01-01T00:00:00Z"
    assert format_rfc3339(1714564800 * NS_PER_S + 120_000_000) == "2024-05-01T12:00:00.12Z"
    assert format_rfc3339(-1) == "1969-12-31T23:59:59.999999999Z"


@given(st.integers(min_value=-(10**18), max_value=2**63 - 1))
def test_format_then_parse_is_exact(nanos: int) -> None:
    assert parse_rfc3339(format_rfc3339(nanos)) == nanos


@pytest.mark.parametrize(("text", "seconds"), [("1s", 1), ("90s", 90), ("5m", 300), ("1.5h", 5400)])
def test_whole_seconds(text: str, seconds: int) -> None:
    assert parse_whole_seconds(text, minimum=1) == seconds


@pytest.mark.parametrize("text", ["0s", "500ms", "1.5s", "5", "5 minutes", "-5m", "5m) OR (1", ""])
def test_whole_seconds_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_whole_seconds(text, minimum=1)


def test_whole_seconds_maximum() -> None:
    with pytest.raises(ValueError, match="longer"):
        parse_whole_seconds("2d", minimum=1, maximum=86400)


@given(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.integers(min_value=1, max_value=10**6),
    st.integers(min_value=1, max_value=500),
)
def test_bucket_count_matches_enumeration(start: int, length: int, every: int) -> None:
    end = start + length
    buckets = {t // every for t in range(start, end)} if length <= 20_000 else None
    if buckets is not None:
        assert bucket_count(start, end, every) == len(buckets)
    assert bucket_count(start, start, every) == 0


# --- query building ----------------------------------------------------------------------------


def test_latest_reading_statement() -> None:
    query = latest_reading(STREETLIGHT, "SL-1", 123)
    assert query.text == (
        'SELECT * FROM "streetlight" WHERE "device_id" = $device_id AND time >= $since '
        "ORDER BY time DESC LIMIT 1"
    )
    assert query.params == {"device_id": "SL-1", "since": 123}


@given(st.text(), st.integers())
def test_no_value_changes_a_statement_text(value: str, nanos: int) -> None:
    # The statement text depends on the contract and the shape of the request only: values reach
    # InfluxDB solely through params, so no value can alter what the statement means.
    single = latest_reading(STREETLIGHT, value, nanos)
    assert single.text == latest_reading(STREETLIGHT, "x", 0).text
    assert single.params == {"device_id": value, "since": nanos}
    plain = latest_readings(STREETLIGHT, 0, device_ids=["a", "b"], district="d")
    hostile = latest_readings(STREETLIGHT, nanos, device_ids=[value, *HOSTILE][:2], district=value)
    assert hostile.text == plain.text
    assert set(hostile.params.values()) <= {value, nanos, *HOSTILE}
    kwargs = {"start_ns": nanos, "end_ns": nanos, "every_s": 60}
    assert (
        history(STREETLIGHT, "voltage", Aggregate.MEAN, value, **kwargs).text
        == history(STREETLIGHT, "voltage", Aggregate.MEAN, "x", **kwargs).text
    )


def test_grouped_latest_binds_each_device_and_the_district() -> None:
    query = latest_readings(STREETLIGHT, 5, device_ids=HOSTILE, district="King's Cross")
    assert query.params == {
        "since": 5,
        "district": "King's Cross",
        **{f"d{n}": v for n, v in enumerate(HOSTILE)},
    }
    assert query.text == (
        'SELECT * FROM "streetlight" WHERE time >= $since AND ('
        + " OR ".join(f'"device_id" = $d{n}' for n in range(len(HOSTILE)))
        + ') AND "district" = $district GROUP BY "device_id" ORDER BY time DESC LIMIT 1'
    )


def test_latest_readings_refuses_an_empty_device_list() -> None:
    # An empty OR would silently widen the query to every device of the profile.
    with pytest.raises(ValueError, match="at least one"):
        latest_readings(STREETLIGHT, 0, device_ids=[])


def test_history_statement() -> None:
    query = history(
        STREETLIGHT,
        "powerConsumption",
        Aggregate.MAX,
        "SL-1",
        start_ns=10,
        end_ns=20,
        every_s=300,
    )
    assert query.text == (
        'SELECT max("powerConsumption") AS "value" FROM "streetlight" '
        'WHERE "device_id" = $device_id AND time >= $start AND time < $end '
        "GROUP BY time(300s) fill(none)"
    )
    assert query.params == {"device_id": "SL-1", "start": 10, "end": 20}


@pytest.mark.parametrize(
    ("field", "agg", "every", "message"),
    [
        ('x") FROM "power_meter" --', Aggregate.MEAN, 60, "not a field"),
        ("powerState", Aggregate.SUM, 60, "does not apply"),
        ("powerConsumption", Aggregate.MEAN, 0, "at least 1s"),
    ],
)
def test_history_refuses_what_the_contract_does_not_allow(
    field: str, agg: Aggregate, every: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        history(STREETLIGHT, field, agg, "SL-1", start_ns=0, end_ns=1, every_s=every)


def test_aggregates_on_non_numeric_fields() -> None:
    assert [a.value for a in Aggregate if a.accepts(FieldType.STATE)] == ["count", "first", "last"]
    assert all(a.accepts(FieldType.INTEGER) for a in Aggregate)


# --- typing values from InfluxDB JSON ----------------------------------------------------------


def test_values_are_typed_by_the_contract() -> None:
    number = FieldSpec(type=FieldType.NUMBER)
    integer = FieldSpec(type=FieldType.INTEGER)
    boolean = FieldSpec(type=FieldType.BOOLEAN)
    assert typed(number, 42) == 42.0
    assert isinstance(typed(number, 42), float)
    assert typed(integer, -80.0) == -80
    assert isinstance(typed(integer, -80.0), int)
    assert typed(boolean, True) is True
    assert typed(number, "oops") == "oops"  # stored data that breaks the contract stays visible
    assert isinstance(aggregate_value(Aggregate.MEAN, integer, 3), float)
    assert isinstance(aggregate_value(Aggregate.COUNT, number, 3.0), int)
    assert isinstance(aggregate_value(Aggregate.MAX, number, 3), float)
    assert aggregate_value(Aggregate.LAST, FieldSpec(type=FieldType.TEXT), "on") == "on"


def test_rows_become_readings_without_tags_or_nulls() -> None:
    row = {
        "time": 1_700_000_000_123_456_789,
        "device_id": "WP-1",
        "district": "North",
        "pressure": 300,
        "rssi": -80,
        "flow": None,
        "notInContract": 1,
    }
    reading = reading_from_row(WATER, row)
    assert reading.time_ns == 1_700_000_000_123_456_789
    assert reading.values == {"pressure": 300.0, "rssi": -80}
    assert isinstance(reading.values["pressure"], float)


def test_grouped_series_are_keyed_by_device() -> None:
    body = orjson.dumps(
        {
            "results": [
                {
                    "statement_id": 0,
                    "series": [
                        {
                            "name": "water_pipe",
                            "tags": {"device_id": "WP-2"},
                            "columns": ["time", "district", "pressure"],
                            "values": [[5, "North", 150]],
                        },
                        {
                            "name": "water_pipe",
                            "tags": {"device_id": "WP-1"},
                            "columns": ["time", "district", "pressure"],
                            "values": [[7, "North", 300.5]],
                        },
                    ],
                }
            ]
        }
    )
    series: list[Series] = parse_query(body)[0]
    readings = readings_by_device(WATER, series)
    assert {k: (v.time_ns, v.values) for k, v in readings.items()} == {
        "WP-1": (7, {"pressure": 300.5}),
        "WP-2": (5, {"pressure": 150.0}),
    }


def test_grouped_readings_match_row_by_row_mapping() -> None:
    # readings_by_device maps columns by position, once per column set: it must agree with
    # reading_from_row whatever the columns, their order, nulls and non-contract columns.
    series = [
        Series("water_pipe", {"device_id": "WP-1"}, ("time", "pressure", "x"), ((1, 2, 3),)),
        Series(
            "water_pipe",
            {"device_id": "WP-2"},
            ("rssi", "time", "leakDetected", "pressure"),
            ((-70.0, 9, None, 1.5), (0, 8, True, 0)),
        ),
        Series("water_pipe", {"device_id": "WP-3"}, ("time", "pressure"), ()),
        Series("water_pipe", {}, ("time", "pressure"), ((4, 5),)),
    ]
    expected = {
        s.tags["device_id"]: reading_from_row(WATER, s.rows()[0])
        for s in series
        if s.values and "device_id" in s.tags
    }
    assert readings_by_device(WATER, series) == expected
    assert expected["WP-2"].values == {"rssi": -70, "pressure": 1.5}
    assert isinstance(expected["WP-2"].values["rssi"], int)


# --- summary figures ---------------------------------------------------------------------------


def readings(*values: dict[str, Value]) -> list[Reading]:
    return [Reading(time_ns=n, values=dict(v)) for n, v in enumerate(values)]


def spec(op: SummaryOp, field: str, equals: str | float | bool | None = None) -> SummarySpec:
    return SummarySpec(name="f", op=op, field=field, equals=equals)


def test_figures_use_only_devices_whose_latest_reading_has_the_field() -> None:
    rows = readings(
        {"powerState": "on", "powerConsumption": 100.5},
        {"powerState": "on"},
        {"powerState": "off", "powerConsumption": 2.0},
        {"powerConsumption": 50},
    )
    lamps_on = figure(spec(SummaryOp.COUNT, "powerState", "on"), rows)
    assert (lamps_on.value, lamps_on.devices) == (2, 3)
    total = figure(spec(SummaryOp.SUM, "powerConsumption"), rows)
    assert (total.value, total.devices) == (152.5, 3)
    mean = figure(spec(SummaryOp.MEAN, "powerConsumption"), rows)
    assert mean.value == pytest.approx(152.5 / 3)
    low = figure(spec(SummaryOp.MIN, "powerConsumption"), rows)
    high = figure(spec(SummaryOp.MAX, "powerConsumption"), rows)
    assert (low.value, high.value) == (2.0, 100.5)
    present = figure(spec(SummaryOp.COUNT, "powerState"), rows)
    assert (present.value, present.devices) == (3, 3)


def test_figures_without_values() -> None:
    rows = readings({"powerState": "on"}, {"powerConsumption": "broken"})
    total = figure(spec(SummaryOp.SUM, "powerConsumption"), rows)
    assert (total.value, total.devices) == (None, 0)  # no data is not zero
    none_on = figure(spec(SummaryOp.COUNT, "powerState", "on"), [])
    assert (none_on.value, none_on.devices) == (0, 0)


def test_count_equality_is_type_strict() -> None:
    rows = readings({"doorOpen": True}, {"doorOpen": 1}, {"doorOpen": "True"}, {"doorOpen": False})
    opened = figure(spec(SummaryOp.COUNT, "doorOpen", True), rows)
    assert (opened.value, opened.devices) == (1, 4)
    ones = figure(spec(SummaryOp.COUNT, "doorOpen", 1.0), rows)
    assert ones.value == 1


def test_integer_sums_stay_integers() -> None:
    rows = readings({"rssi": -80}, {"rssi": -70})
    total = figure(spec(SummaryOp.SUM, "rssi"), rows)
    assert total.value == -150
    assert isinstance(total.value, int)


# --- secrets -----------------------------------------------------------------------------------


def test_scrubber_masks_every_secret_even_when_one_contains_another() -> None:
    scrub = Scrubber(["abc", "abcdef"][::-1])
    assert scrub("token abcdef and abc") == "token *** and ***"
