"""The API against the real InfluxDB: seeded with line protocol written by the tests (the `seed`
fixture, tests/support/seeding.py; independent of ingest), a small registry, and the repo's
profiles. Expected values are computed in the test from the seeded points, never copied from what
the API answers."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from common.influx import InfluxClient, InfluxConfig
from device_profiles import DEFAULT_PROFILES, load_profiles
from tests.support.seeding import Point, Scalar, Seed
from tests.support.times import HOUR, MIN, S, rfc3339

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

PROFILES = load_profiles(DEFAULT_PROFILES)


def latest(points: Sequence[Point], since: int | None = None) -> Point | None:
    """The newest point; points of one series at one timestamp are one point in InfluxDB."""
    inside = [p for p in points if since is None or p.time_ns >= since]
    if not inside:
        return None
    newest = max(p.time_ns for p in inside)
    merged: dict[str, Scalar] = {}
    for p in inside:
        if p.time_ns == newest:
            merged |= p.fields
    return Point(inside[0].measurement, inside[0].device_id, inside[0].district, merged, newest)


# --- GET /devices/{id} ---------------------------------------------------------------------------


async def test_latest_reading_is_returned_exactly_as_written(
    api: httpx.AsyncClient, seed: Seed
) -> None:
    response = await api.get("/devices/SL-A1")
    assert response.status_code == 200
    body = response.json()
    newest = latest(seed.of("SL-A1"))
    assert newest is not None
    assert body == {
        "device_id": "SL-A1",
        "profile": "streetlight",
        "district": "North",
        "latitude": 30.01,
        "longitude": 120.01,
        "address": "1 Test Rd",
        # 5 min since the last reading of a 60 s profile: past 3 intervals, so silent
        "status": {"reporting": "silent", "connected": None, "last_seen": rfc3339(newest.time_ns)},
        "reading": {"time": rfc3339(newest.time_ns), "values": newest.fields},
    }
    # the newest of three readings, with each value of its contract type
    assert body["reading"]["values"]["powerConsumption"] == 130.25
    assert body["reading"]["values"]["doorOpen"] is False


async def test_integer_and_whole_float_values_keep_their_types(
    api: httpx.AsyncClient, seed: Seed
) -> None:
    values = (await api.get("/devices/WP-A2")).json()["reading"]["values"]
    assert values == {"pressure": 150.0, "flow": 10.0, "rssi": -80}
    assert isinstance(values["pressure"], float)  # InfluxDB's JSON says 150
    assert isinstance(values["rssi"], int)


async def test_unknown_device_is_404(api: httpx.AsyncClient) -> None:
    for device_id in ("SL-404", "SL-GHOST"):  # SL-GHOST has data but is not registered
        response = await api.get(f"/devices/{device_id}")
        assert response.status_code == 404
        assert device_id in response.json()["detail"]


async def test_registered_device_without_data(api: httpx.AsyncClient) -> None:
    response = await api.get("/devices/SL-A3")
    assert response.status_code == 200
    assert response.json()["reading"] is None
    assert response.json()["district"] == "North"


# --- GET /devices --------------------------------------------------------------------------------


async def test_list_filters_and_paginates(api: httpx.AsyncClient, seed: Seed) -> None:
    expected_ids = sorted(d for d, (_, district) in seed.registry.items() if district == "North")
    seen: list[dict[str, Any]] = []
    for offset in range(0, len(expected_ids) + 3, 3):
        response = await api.get(
            "/devices", params={"district": "North", "limit": 3, "offset": offset}
        )
        assert response.status_code == 200
        body = response.json()
        assert body["total"] == len(expected_ids)
        assert len(body["items"]) <= 3
        seen += body["items"]
    assert [d["device_id"] for d in seen] == expected_ids
    for item in seen:
        newest = latest(seed.of(item["device_id"]))
        expected = (
            None if newest is None else {"time": rfc3339(newest.time_ns), "values": newest.fields}
        )
        assert item["reading"] == expected, item["device_id"]


async def test_list_by_profile_and_district(api: httpx.AsyncClient, seed: Seed) -> None:
    response = await api.get(
        "/devices", params={"profile": "water_pipe", "district": "King's Cross"}
    )
    body = response.json()
    assert body["total"] == 1
    [item] = body["items"]
    assert item["device_id"] == "WP-K1"
    assert item["reading"]["values"] == {"pressure": 222.0}
    by_profile = (await api.get("/devices", params={"profile": "power_meter"})).json()
    assert [d["device_id"] for d in by_profile["items"]] == ["PM-A1", "PM-S1"]
    assert by_profile["items"][1]["reading"] is None


@pytest.mark.parametrize(
    ("params", "name", "allowed"),
    [
        ({"profile": "lamppost"}, "profile", ["power_meter", "streetlight", "water_pipe"]),
        ({"district": "Nowhere"}, "district", ["King's Cross", "North", "South"]),
        ({"district": "North' OR '1'='1"}, "district", ["King's Cross", "North", "South"]),
    ],
)
async def test_list_rejects_unknown_filters(
    api: httpx.AsyncClient, params: dict[str, str], name: str, allowed: list[str]
) -> None:
    response = await api.get("/devices", params=params)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", name]
    assert error["ctx"]["allowed"] == allowed
    assert all(value in error["msg"] for value in allowed)


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1001}, {"offset": -1}])
async def test_list_rejects_bad_pages(api: httpx.AsyncClient, params: dict[str, int]) -> None:
    assert (await api.get("/devices", params=params)).status_code == 422


# --- GET /devices/{id}/history -----------------------------------------------------------------


def _numbers(values: list[Scalar]) -> list[float]:
    return [float(v) for v in values if isinstance(v, int | float)]


AGGREGATES: dict[str, Any] = {
    "mean": lambda v: math.fsum(_numbers(v)) / len(_numbers(v)),
    "sum": lambda v: math.fsum(_numbers(v)),
    "min": lambda v: min(_numbers(v)),
    "max": lambda v: max(_numbers(v)),
    "count": len,
    "first": lambda v: v[0],
    "last": lambda v: v[-1],
    "spread": lambda v: max(_numbers(v)) - min(_numbers(v)),
}


def expected_buckets(
    points: Sequence[Point], field_name: str, agg: str, *, start: int, end: int, every: int
) -> list[tuple[str, Scalar]]:
    """InfluxDB's GROUP BY time(every): buckets aligned to the epoch, [start, end) only."""
    buckets: dict[int, list[tuple[int, Scalar]]] = defaultdict(list)
    for p in points:
        if start <= p.time_ns < end and field_name in p.fields:
            buckets[p.time_ns // every * every].append((p.time_ns, p.fields[field_name]))
    return [
        (rfc3339(bucket), AGGREGATES[agg]([v for _, v in sorted(buckets[bucket])]))
        for bucket in sorted(buckets)
    ]


def assert_close(got: Any, want: Any, where: str = "") -> None:
    """Equal, except floats compare to 1e-12 relative (sums may be added in another order)."""
    if isinstance(want, float) and not isinstance(got, bool):
        assert got == pytest.approx(want, rel=1e-12), where
    elif isinstance(want, dict):
        assert isinstance(got, dict), where
        assert got.keys() == want.keys(), where
        for key in want:
            assert_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list), where
        assert len(got) == len(want), where
        for n, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close(g, w, f"{where}[{n}]")
    else:
        assert got == want, where
        assert type(got) is type(want), where


@pytest.mark.parametrize(
    ("field_name", "agg"),
    [
        ("powerConsumption", "mean"),
        ("powerConsumption", "sum"),
        ("powerConsumption", "min"),
        ("powerConsumption", "max"),
        ("powerConsumption", "count"),
        ("powerConsumption", "last"),
        ("powerConsumption", "first"),
        ("powerConsumption", "spread"),
        ("voltage", "mean"),
        ("powerState", "count"),
        ("powerState", "last"),
        ("powerState", "first"),
    ],
)
async def test_history_buckets(
    api: httpx.AsyncClient, seed: Seed, field_name: str, agg: str
) -> None:
    start = seed.history_base + 7 * MIN + 30 * S  # not on a bucket boundary
    end = seed.history_base + 97 * MIN
    every = 10 * MIN
    response = await api.get(
        "/devices/SL-H1/history",
        params={
            "field": field_name,
            "agg": agg,
            "every": "10m",
            "start": rfc3339(start),
            "end": rfc3339(end),
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    expected = expected_buckets(
        seed.of("SL-H1"), field_name, agg, start=start, end=end, every=every
    )
    assert len(expected) == 10  # 10 buckets, the first starting before `start`
    assert_close(body["points"], [{"time": t, "value": v} for t, v in expected])
    spec = PROFILES["streetlight"].fields[field_name]
    assert body["unit"] == (None if agg == "count" else spec.unit)
    assert (body["field"], body["agg"], body["every_seconds"]) == (field_name, agg, 600)
    assert (body["every"], body["tz"]) == ("10m", None)
    assert (body["start"], body["end"]) == (rfc3339(start), rfc3339(end))


async def test_history_window_with_offsets_and_no_data(api: httpx.AsyncClient, seed: Seed) -> None:
    start = datetime.fromtimestamp(seed.history_base // S, UTC).astimezone()
    response = await api.get(
        "/devices/SL-H1/history",
        params={
            "field": "powerConsumption",
            "agg": "count",
            "every": "1h",
            "start": start.isoformat(),  # local offset, not Z
            "end": rfc3339(seed.history_base + 2 * HOUR),
        },
    )
    assert response.status_code == 200
    assert [b["value"] for b in response.json()["points"]] == [60, 60]
    empty = await api.get("/devices/SL-A3/history", params={"field": "voltage"})
    assert empty.status_code == 200
    assert empty.json()["points"] == []


@pytest.mark.parametrize(
    ("params", "loc", "fragment"),
    [
        ({"field": "brightness"}, "field", "powerConsumption"),
        ({"field": 'powerConsumption") FROM "water_pipe'}, "field", "not a field"),
        ({"field": "powerState", "agg": "mean"}, "agg", "numeric"),
        ({"field": "voltage", "agg": "median"}, "agg", "mean"),
        ({"field": "voltage", "every": "0s"}, "every", "shorter"),
        ({"field": "voltage", "every": "500ms"}, "every", "whole"),
        ({"field": "voltage", "every": "10"}, "every", "duration"),
        ({"field": "voltage", "every": "fortnight"}, "every", "hour, day, week, month"),
        ({"field": "voltage", "every": "day", "tz": "Mars/Olympus"}, "tz", "IANA"),
        ({"field": "voltage", "every": "hour", "start": "2020-01-01T00:00:00Z"}, "every", "1000"),
        ({"field": "voltage", "agg": "delta"}, "agg", "counter"),
        ({"field": "lifetimePowerConsumption", "agg": "mean"}, "agg", "delta or rate"),
        ({"field": "lifetimePowerConsumption", "agg": "spread"}, "agg", "delta or rate"),
        ({"field": "voltage", "every": "5m) fill(0"}, "every", "duration"),
        ({"field": "voltage", "every": "1s"}, "every", "maximum of 10000"),
        ({"field": "voltage", "start": "yesterday"}, "start", "RFC 3339"),
        ({"field": "voltage", "end": "2024-05-01T12:00:00"}, "end", "RFC 3339"),
        ({"field": "voltage", "start": "2024-05-01T12:00:00Z' OR '1'='1"}, "start", "RFC 3339"),
        (
            {"field": "voltage", "start": "2024-05-02T00:00:00Z", "end": "2024-05-01T00:00:00Z"},
            "end",
            "after start",
        ),
    ],
)
async def test_history_rejects_bad_parameters(
    api: httpx.AsyncClient, params: dict[str, str], loc: str, fragment: str
) -> None:
    response = await api.get("/devices/SL-H1/history", params=params)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", loc]
    assert fragment in error["msg"]


async def test_history_field_error_lists_the_profile_fields(api: httpx.AsyncClient) -> None:
    response = await api.get("/devices/WP-A1/history", params={"field": "powerState"})
    [error] = response.json()["detail"]
    assert error["ctx"]["allowed"] == sorted(PROFILES["water_pipe"].fields)


async def test_history_of_unknown_device_is_404(api: httpx.AsyncClient) -> None:
    response = await api.get("/devices/SL-404/history", params={"field": "voltage"})
    assert response.status_code == 404


# --- districts ---------------------------------------------------------------------------------


async def test_districts_with_counts(api: httpx.AsyncClient, seed: Seed) -> None:
    body = (await api.get("/districts")).json()
    expected = []
    for district in sorted({d for _, d in seed.registry.values()}):
        counts = {
            p: sum(1 for pp, dd in seed.registry.values() if (pp, dd) == (p, district))
            for p in sorted(PROFILES)
        }
        expected.append({"district": district, "devices": sum(counts.values()), "profiles": counts})
    assert body == {"items": expected}


def expected_summary(seed: Seed, district: str, window: int) -> list[dict[str, Any]]:
    """The summary as docs define it, computed from the seeded points."""
    since = seed.now - window
    out = []
    for name in sorted(PROFILES):
        profile = PROFILES[name]
        members = [d for d, (p, dd) in seed.registry.items() if (p, dd) == (name, district)]
        latest_points = [
            point
            for d in members
            if (point := latest([p for p in seed.of(d) if p.district == district], since))
        ]
        figures = []
        for spec in profile.summary:
            values = [p.fields[spec.field] for p in latest_points if spec.field in p.fields]
            value: float | int | None
            if spec.op == "count":
                value = sum(1 for v in values if spec.equals is None or v == spec.equals)
                devices = len(values)
            else:
                numbers = [float(v) for v in values if isinstance(v, int | float)]
                devices = len(numbers)
                reduce = {
                    "sum": math.fsum,
                    "mean": lambda n: math.fsum(n) / len(n),
                    "min": min,
                    "max": max,
                }[spec.op]
                value = reduce(numbers) if numbers else None
            figures.append(
                {
                    "name": spec.name,
                    "op": spec.op.value,
                    "field": spec.field,
                    "equals": spec.equals,
                    "unit": None if spec.op == "count" else profile.fields[spec.field].unit,
                    "value": value,
                    "devices": devices,
                }
            )
        out.append(
            {
                "profile": name,
                "devices_registered": len(members),
                "devices_reporting": len(latest_points),
                "figures": figures,
            }
        )
    return out


@pytest.mark.parametrize(
    ("district", "window", "seconds"),
    [("North", "1h", 3600), ("North", "12h", 43200), ("King's Cross", "30m", 1800)],
)
async def test_district_summary(
    api: httpx.AsyncClient, seed: Seed, district: str, window: str, seconds: int
) -> None:
    response = await api.get(f"/districts/{district}/summary", params={"window": window})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["district"] == district
    assert body["window_seconds"] == seconds
    assert_close(body["profiles"], expected_summary(seed, district, seconds * S))


async def test_north_summary_spot_checks(api: httpx.AsyncClient) -> None:
    """The same figures by hand, so the test's own summary code is checked too."""
    body = (await api.get("/districts/North/summary", params={"window": "1h"})).json()
    by_profile = {p["profile"]: p for p in body["profiles"]}
    lamps = by_profile["streetlight"]
    # SL-A1 and SL-A2 report; SL-A3 never did, SL-A4 3 h ago, SL-H1 4 h ago, SL-GHOST unregistered
    assert (lamps["devices_registered"], lamps["devices_reporting"]) == (5, 2)
    figures = {f["name"]: (f["value"], f["devices"]) for f in lamps["figures"]}
    # both lamps are on; only SL-A1's latest reading carries power (SL-A2's latest is partial)
    assert figures == {"lamps_on": (2, 2), "total_power_w": (130.25, 1)}
    pipes = {f["name"]: f["value"] for f in by_profile["water_pipe"]["figures"]}
    assert pipes == {
        "mean_pressure_kpa": pytest.approx(225.25),
        "min_pressure_kpa": 150.0,
        "total_flow_m3h": 7.5,
    }
    meters = by_profile["power_meter"]
    assert meters["devices_reporting"] == 1
    assert {f["name"]: f["value"] for f in meters["figures"]} == {
        "total_active_power_kw": 12.5,
        "max_active_power_kw": 12.5,
    }


async def test_summary_of_a_quiet_district(api: httpx.AsyncClient) -> None:
    body = (await api.get("/districts/South/summary")).json()
    meters = next(p for p in body["profiles"] if p["profile"] == "power_meter")
    assert (meters["devices_registered"], meters["devices_reporting"]) == (1, 0)
    assert [f["value"] for f in meters["figures"]] == [None, None]


async def test_summary_errors(api: httpx.AsyncClient) -> None:
    assert (await api.get("/districts/Nowhere/summary")).status_code == 404
    for window in ("0s", "forever", "31d", "1h; DROP DATABASE x"):
        response = await api.get("/districts/North/summary", params={"window": window})
        assert response.status_code == 422, window
        assert response.json()["detail"][0]["loc"] == ["query", "window"]


# --- injection ---------------------------------------------------------------------------------

HOSTILE = [
    "x' OR 1=1",
    "x' OR '1'='1",
    '"; DROP DATABASE citysense',
    'a" OR "1"="1',
    "SL-A1' OR device_id =~ /.*/ --",
    "SL-A1\\",
]


async def test_injection_attempts_change_nothing(
    api: httpx.AsyncClient, seed: Seed, influx: InfluxConfig
) -> None:
    before = (await api.get("/devices/SL-A1")).json()
    for value in HOSTILE:
        assert (await api.get(f"/devices/{value}")).status_code == 404, value
        assert (
            await api.get(f"/devices/{value}/history", params={"field": "voltage"})
        ).status_code == 404
        assert (await api.get(f"/districts/{value}/summary")).status_code == 404, value
        for params in ({"district": value}, {"profile": value}):
            assert (await api.get("/devices", params=params)).status_code == 422, value
        for name in ("field", "every", "start", "end", "agg"):
            params = {"field": "voltage", name: value}
            response = await api.get("/devices/SL-A1/history", params=params)
            assert response.status_code == 422, (name, value)
    assert (await api.get("/devices/SL-A1")).json() == before
    with InfluxClient(influx) as client:
        databases = client.query("SHOW DATABASES")[0][0].values
        assert (influx.database,) in databases
        counts = client.query('SELECT count("powerState") FROM "streetlight"')[0][0].values
        assert counts[0][1] == sum(
            1 for p in seed.points if p.measurement == "streetlight" and "powerState" in p.fields
        )


async def test_a_district_with_a_quote_is_bound_not_spliced(api: httpx.AsyncClient) -> None:
    # "King's Cross" reaches InfluxDB as a bound parameter; spliced into the text, its quote
    # would end the string literal and the statement would fail or mean something else.
    body = (await api.get("/districts/King's Cross/summary", params={"window": "1h"})).json()
    reporting = {p["profile"]: p["devices_reporting"] for p in body["profiles"]}
    assert reporting == {"power_meter": 0, "streetlight": 1, "water_pipe": 1}
