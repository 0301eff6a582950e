"""Aggregation across devices against the real InfluxDB, and open data: k-anonymous cells on a
fixed daily grid, with attempts to single out the one device of a small district."""

from __future__ import annotations

import statistics
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from api.core.settings import ApiSettings
from api.core.tokens import hash_token
from citysense.servers import LocalServers
from common.influx import InfluxClient, InfluxConfig
from tests.support.api import api_settings
from tests.support.seeding import Point, line_protocol
from tests.support.times import S, rfc3339, yesterday

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

NORTH = [f"WP-N{n}" for n in range(6)]  # six pipes: above k = 5
SOUTH = ["WP-S0"]  # one pipe: a household could be singled out
METERS = [("PM-N0", "North"), ("PM-N1", "North"), ("PM-S0", "South")]
LAMPS = [(f"SL-N{n}", "North") for n in range(5)]
TOKENS = {"city": "agg-city-token", "portal": "agg-portal-token"}
DAY = 86400 * S
Q = 15 * 60 * S


def pressure(device: str, t: int) -> float:
    return 200.0 + 10 * int(device[-1]) + (t // Q) % 4


@pytest.fixture
def app_settings(servers: LocalServers, influx: InfluxConfig, tmp_path: Path) -> ApiSettings:
    """A day of pipes, meters and lamps; their own registry; a city and an open-data token."""
    day = yesterday()
    points = []
    for device, district in [(d, "North") for d in NORTH] + [(d, "South") for d in SOUTH]:
        points += [
            Point("water_pipe", device, district, {"pressure": pressure(device, t)}, t)
            for t in range(day, day + DAY, Q)
        ]
    for n, (device, district) in enumerate(METERS):
        value = 100.0 * n
        for i, t in enumerate(range(day - Q, day + DAY, Q)):
            value = 2.0 if (n == 1 and i == 40) else value + 0.5  # PM-N1 replaced at step 40
            points.append(
                Point("power_meter", device, district, {"totalActiveEnergyImport": value}, t)
            )
    dusk = day + 19 * 3600 * S
    for n, (device, district) in enumerate(LAMPS):  # three of five lamps on after dusk
        points.append(
            Point(
                "streetlight", device, district, {"powerState": "on" if n < 3 else "off"}, dusk + S
            )
        )
    with InfluxClient(influx) as client:
        client.write(line_protocol(points))
    registry = tmp_path / "agg-registry.csv"
    rows = [f"{d},water_pipe,North,30,120," for d in NORTH] + [
        f"{d},water_pipe,South,31,121," for d in SOUTH
    ]
    rows += [f"{d},power_meter,{dd},30,120," for d, dd in METERS] + [
        f"{d},streetlight,{dd},30,120," for d, dd in LAMPS
    ]
    registry.write_text(
        "device_id,profile,district,latitude,longitude,address\n" + "\n".join(rows) + "\n"
    )
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        "tokens:\n"
        f"  - {{name: city, sha256: {hash_token(TOKENS['city'])}, scope: city}}\n"
        f"  - {{name: portal, sha256: {hash_token(TOKENS['portal'])}, scope: open_data}}\n"
    )
    return api_settings(servers, influx, tmp_path, registry=registry, tokens=tokens)


async def get(api: httpx.AsyncClient, who: str, **params: Any) -> httpx.Response:
    return await api.get(
        "/aggregates", params=params, headers={"Authorization": f"Bearer {TOKENS[who]}"}
    )


async def test_mean_and_min_pressure_per_district_per_15_minutes(api: httpx.AsyncClient) -> None:
    day = yesterday()
    start, end = day + 3600 * S, day + 2 * 3600 * S
    rows = {}
    for agg in ("mean", "min"):
        response = await get(
            api,
            "city",
            profile="water_pipe",
            field="pressure",
            agg=agg,
            every="15m",
            start=rfc3339(start),
            end=rfc3339(end),
        )
        assert response.status_code == 200, response.text
        rows[agg] = {
            (r["time"], r["district"]): (r["value"], r["devices"]) for r in response.json()["rows"]
        }
    for t in range(start, end, Q):
        for district, devices in (("North", NORTH), ("South", SOUTH)):
            values = [pressure(d, t) for d in devices]
            assert rows["mean"][(rfc3339(t), district)] == (
                pytest.approx(statistics.fmean(values)),
                len(devices),
            )
            assert rows["min"][(rfc3339(t), district)] == (min(values), len(devices))
    assert len(rows["mean"]) == 4 * 2


def device_means(devices: list[str], begin: int, end: int) -> list[float]:
    """Each pipe's mean over its readings in [begin, end): the per-device stage of a mean."""
    return [
        statistics.fmean(pressure(d, t) for t in range(-(-begin // Q) * Q, end, Q)) for d in devices
    ]


async def test_calendar_hours_in_a_half_hour_zone(api: httpx.AsyncClient) -> None:
    # Asia/Kolkata is UTC+5:30: its hours are one grid of 1 h windows, 30 min off UTC's, asked
    # for in one GROUP BY time(3600s, 1800s) statement; the first window is clipped at start.
    day = yesterday()
    start, end = day + 3600 * S, day + 4 * 3600 * S
    response = await get(
        api,
        "city",
        profile="water_pipe",
        field="pressure",
        agg="mean",
        every="hour",
        tz="Asia/Kolkata",
        start=rfc3339(start),
        end=rfc3339(end),
    )
    assert response.status_code == 200, response.text
    got = {(r["time"], r["district"]): (r["value"], r["devices"]) for r in response.json()["rows"]}
    half = 1800 * S
    windows = [(day + half + k * 3600 * S, day + half + (k + 1) * 3600 * S) for k in range(4)]
    expected = {}
    for begin, finish in windows:
        for district, devices in (("North", NORTH), ("South", SOUTH)):
            means = device_means(devices, max(begin, start), min(finish, end))
            expected[(rfc3339(begin), district)] = (
                pytest.approx(statistics.fmean(means)),
                len(devices),
            )
    assert got == expected


async def test_months_of_different_lengths_one_statement_each(api: httpx.AsyncClient) -> None:
    day = yesterday()
    start = day - 62 * DAY  # three calendar months: no one grid, one statement per month
    response = await get(
        api,
        "city",
        profile="water_pipe",
        field="pressure",
        agg="max",
        every="month",
        tz="Europe/London",
        district="North",
        start=rfc3339(start),
        end=rfc3339(day + DAY),
    )
    assert response.status_code == 200, response.text
    [row] = response.json()["rows"]  # the seeded day lies in one month
    assert (row["district"], row["value"], row["devices"]) == ("North", 200.0 + 10 * 5 + 3, 6)
    local = datetime.fromtimestamp(day // S, ZoneInfo("Europe/London"))
    first = local.replace(day=1, hour=0, minute=0, second=0)
    assert row["time"] == rfc3339(int(first.timestamp()) * S)


async def test_energy_per_district_per_day_from_deltas(api: httpx.AsyncClient) -> None:
    day = yesterday()
    response = await get(
        api,
        "city",
        profile="power_meter",
        field="totalActiveEnergyImport",
        agg="delta",
        every="day",
        start=rfc3339(day),
        end=rfc3339(day + DAY),
    )
    assert response.status_code == 200, response.text
    got = {r["district"]: (r["value"], r["devices"]) for r in response.json()["rows"]}
    steps = DAY // Q  # increases inside the day, each 0.5 kWh; the reset counts its 2.0 from 0
    north = steps * 0.5 + (steps * 0.5 - 0.5 + 2.0)
    assert got == {"North": (pytest.approx(north), 2), "South": (pytest.approx(steps * 0.5), 1)}
    mean = await get(
        api, "city", profile="power_meter", field="totalActiveEnergyImport", agg="mean"
    )
    assert mean.status_code == 422  # never a mean of a counter


async def test_lamps_on_against_lamps_expected_after_dusk(api: httpx.AsyncClient) -> None:
    dusk = yesterday() + 19 * 3600 * S
    response = await get(
        api,
        "city",
        profile="streetlight",
        field="powerState",
        agg="count",
        equals="on",
        every="1h",
        start=rfc3339(dusk),
        end=rfc3339(dusk + 3600 * S),
    )
    assert response.status_code == 200, response.text
    [row] = response.json()["rows"]
    assert (row["district"], row["value"], row["registered"]) == ("North", 3, len(LAMPS))
    off = await get(
        api,
        "city",
        profile="streetlight",
        field="powerState",
        agg="count",
        equals="bootingUp",
        every="1h",
        start=rfc3339(dusk),
        end=rfc3339(dusk + 3600 * S),
    )
    assert [r["value"] for r in off.json()["rows"]] == [0]  # none: an answer, not a missing row


async def test_open_data_publishes_whole_days_over_enough_devices(api: httpx.AsyncClient) -> None:
    day = yesterday()
    response = await get(
        api,
        "portal",
        profile="water_pipe",
        field="pressure",
        agg="mean",
        every="day",
        start=rfc3339(day),
        end=rfc3339(day + DAY),
    )
    assert response.status_code == 200, response.text
    rows = {r["district"]: r for r in response.json()["rows"]}
    assert rows["North"]["devices"] == 6 and not rows["North"]["suppressed"]
    assert rows["South"] == {
        "time": rfc3339(day),
        "district": "South",
        "value": None,
        "devices": None,
        "registered": 1,
        "suppressed": True,
    }
    assert response.json()["min_devices"] == 5


async def test_open_data_cannot_single_out_the_small_district(api: httpx.AsyncClient) -> None:
    day = yesterday()
    base = {"profile": "water_pipe", "field": "pressure", "every": "day"}
    # 1. the city-wide total minus North would be South's one pipe: no city-wide totals
    city = await get(api, "portal", **base, agg="sum", group_by="none", start=rfc3339(day))
    assert city.status_code == 403
    # 2. finer or shifted windows to difference against whole days: refused
    for every, tz in (("1h", "UTC"), ("day", "Asia/Shanghai"), ("15m", "UTC")):
        response = await get(api, "portal", **{**base, "every": every}, tz=tz, agg="sum")
        assert response.status_code == 422, (every, tz)
    # 3. half a day against a whole day: the window is widened to whole days, same answer
    whole = await get(api, "portal", **base, agg="sum", start=rfc3339(day), end=rfc3339(day + DAY))
    half = await get(
        api, "portal", **base, agg="sum", start=rfc3339(day + DAY // 2), end=rfc3339(day + DAY)
    )
    assert whole.json()["rows"] == half.json()["rows"]
    # 4. South on its own, any aggregate: suppressed
    for agg in ("mean", "min", "max", "sum", "count", "first", "last"):
        response = await get(api, "portal", **base, agg=agg, district="South", start=rfc3339(day))
        assert all(r["suppressed"] and r["value"] is None for r in response.json()["rows"]), agg
    # 5. the device itself, or today's still-open day
    assert (
        await api.get("/devices/WP-S0", headers={"Authorization": f"Bearer {TOKENS['portal']}"})
    ).status_code == 403
    today = await get(api, "portal", **base, agg="sum", start=rfc3339(day + DAY))
    assert today.status_code == 422
