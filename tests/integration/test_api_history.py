"""History extensions against the real InfluxDB: counters as deltas and rates with a reset,
calendar windows (day, hour, month) in a time zone, a DST day of 23 hours. Expected values are
computed here from the seeded readings, independently of the API's code."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from api.core.settings import ApiSettings
from citysense.servers import LocalServers
from common.influx import InfluxClient, InfluxConfig
from tests.support.api import api_settings
from tests.support.seeding import Point, line_protocol
from tests.support.times import S, rfc3339

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")
COUNTER_START = int(datetime(2024, 5, 1, tzinfo=SHANGHAI).timestamp()) * S
STEP = 15 * 60 * S


def counter_values() -> list[tuple[int, float]]:
    """A meter every 15 min for 48 h (and one reading before), replaced (reset) at step 100."""
    out, value = [], 1000.0
    for i in range(-1, 192):
        value = 0.5 if i == 100 else round(value + 0.25 + (i % 4) * 0.1, 6)
        out.append((COUNTER_START + i * STEP, value))
    return out


DST_DAY_START = int(datetime(2024, 3, 9, tzinfo=NEW_YORK).timestamp()) * S
MONTH_READINGS = [int(datetime(2024, 1, 15, 12).timestamp()) * S + d * 86400 * S for d in range(60)]


@pytest.fixture
def app_settings(servers: LocalServers, influx: InfluxConfig, tmp_path: Path) -> ApiSettings:
    """A power meter's counter across a reset, and a lamp around a DST change and over months."""
    points = [
        Point("power_meter", "PM-1", "North", {"totalActiveEnergyImport": v, "activePower": 1.0}, t)
        for t, v in counter_values()
    ]
    points += [  # hourly for three local days around the spring-forward of 2024-03-10
        Point("streetlight", "SL-1", "North", {"voltage": 230.0}, DST_DAY_START + h * 3600 * S)
        for h in range(71)
    ]
    points += [Point("streetlight", "SL-1", "North", {"current": 0.5}, t) for t in MONTH_READINGS]
    with InfluxClient(influx) as client:
        client.write(line_protocol(points))
    registry = tmp_path / "history-registry.csv"
    registry.write_text(
        "device_id,profile,district,latitude,longitude,address\n"
        "PM-1,power_meter,North,30,120,\nSL-1,streetlight,North,30,120,\n"
    )
    return api_settings(servers, influx, tmp_path, registry=registry)


def expected_increases(windows_of: Any) -> dict[str, float]:
    readings = counter_values()
    out: dict[str, float] = defaultdict(float)
    for (_, before), (t, value) in itertools.pairwise(readings):
        if COUNTER_START <= t < COUNTER_START + 48 * 3600 * S:
            out[windows_of(t)] += value - before if value >= before else value
    return dict(out)


async def history(api: httpx.AsyncClient, device: str, **params: Any) -> dict[str, Any]:
    response = await api.get(f"/devices/{device}/history", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_energy_per_local_day_from_counter_deltas_across_a_reset(
    api: httpx.AsyncClient,
) -> None:
    body = await history(
        api,
        "PM-1",
        field="totalActiveEnergyImport",
        agg="delta",
        every="day",
        tz="Asia/Shanghai",
        start=rfc3339(COUNTER_START),
        end=rfc3339(COUNTER_START + 48 * 3600 * S),
    )

    def local_day(t: int) -> str:
        day = datetime.fromtimestamp(t // S, SHANGHAI).replace(hour=0, minute=0, second=0)
        return rfc3339(int(day.timestamp()) * S)

    expected = expected_increases(local_day)
    assert len(expected) == 2
    got = {p["time"]: p["value"] for p in body["points"]}
    assert got.keys() == expected.keys()
    for day, value in expected.items():
        assert got[day] == pytest.approx(value, rel=1e-9)
    # the reset did not produce a negative delta, nor lose the energy counted since it
    assert all(v > 20 for v in got.values())
    assert (body["unit"], body["tz"], body["every_seconds"]) == ("kWh", "Asia/Shanghai", None)


async def test_energy_rate_per_hour(api: httpx.AsyncClient) -> None:
    body = await history(
        api,
        "PM-1",
        field="totalActiveEnergyImport",
        agg="rate",
        every="1h",
        start=rfc3339(COUNTER_START),
        end=rfc3339(COUNTER_START + 48 * 3600 * S),
    )
    expected = expected_increases(lambda t: rfc3339(t // (3600 * S) * 3600 * S))
    got = {p["time"]: p["value"] for p in body["points"]}
    assert got.keys() == expected.keys()
    for hour, value in expected.items():
        assert got[hour] == pytest.approx(value, rel=1e-9)  # per hour over a 1 h window
    assert body["unit"] == "kWh/h"


async def test_a_dst_day_has_23_hours(api: httpx.AsyncClient) -> None:
    body = await history(
        api,
        "SL-1",
        field="voltage",
        agg="count",
        every="day",
        tz="America/New_York",
        start="2024-03-09T00:00:00-05:00",
        end="2024-03-12T00:00:00-04:00",
    )
    assert [(p["time"], p["value"]) for p in body["points"]] == [
        ("2024-03-09T05:00:00Z", 24),
        ("2024-03-10T05:00:00Z", 23),
        ("2024-03-11T04:00:00Z", 24),
    ]


async def test_months_in_a_time_zone(api: httpx.AsyncClient) -> None:
    body = await history(
        api,
        "SL-1",
        field="current",
        agg="count",
        every="month",
        tz="Asia/Shanghai",
        start="2024-01-01T00:00:00+08:00",
        end="2024-04-01T00:00:00+08:00",
    )
    counts: dict[str, int] = defaultdict(int)
    for t in MONTH_READINGS:
        local = datetime.fromtimestamp(t // S, SHANGHAI)
        counts[
            rfc3339(int(datetime(local.year, local.month, 1, tzinfo=SHANGHAI).timestamp()) * S)
        ] += 1
    assert {p["time"]: p["value"] for p in body["points"]} == dict(counts)
    assert body["points"][0]["time"] == "2023-12-31T16:00:00Z"  # local midnight, Jan 1


async def test_first_last_spread_in_calendar_windows(api: httpx.AsyncClient) -> None:
    start, end = COUNTER_START, COUNTER_START + 24 * 3600 * S
    for agg in ("first", "last", "min", "max"):
        body = await history(
            api,
            "PM-1",
            field="totalActiveEnergyImport",
            agg=agg,
            every="day",
            tz="Asia/Shanghai",
            start=rfc3339(start),
            end=rfc3339(end),
        )
        inside = [v for t, v in counter_values() if start <= t < end]
        want = {"first": inside[0], "last": inside[-1], "min": min(inside), "max": max(inside)}
        assert [p["value"] for p in body["points"]] == [pytest.approx(want[agg])], agg
