"""Kept aggregates (api.cells) against the real servers: readings go through a real ingest
process, which marks the windows it writes; a question asked again is answered without InfluxDB
computing anything, and a late reading makes exactly its windows be computed again. The oracle
is a second app with nothing kept, asked the same question."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest

from api.compute.cells import MARKS_REUSE_S
from api.core.settings import ApiSettings
from api.main import create_app
from api.routes.aggregates import CELLS_HEADER
from citysense.servers import LocalServers
from common.errors import ConfigError
from common.influx import InfluxConfig
from tests.support.api import api_settings, running
from tests.support.mqtt import publish
from tests.support.polling import until
from tests.support.processes import IngestProcess, ingest_env, wait_written
from tests.support.times import S, rfc3339, yesterday
from wire.topics import TopicLayout

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

Q = 15 * 60 * S
H = 3600 * S
PIPES = {"WP-C0": "North", "WP-C1": "North", "WP-C2": "South"}
METERS = {"PM-C0": "North", "PM-C1": "South"}


@dataclass
class City:
    api: httpx.AsyncClient
    settings: ApiSettings
    layout: TopicLayout
    url: str
    influx: InfluxConfig
    ingest: IngestProcess

    def send(self, profile: str, device: str, readings: list[dict[str, Any]]) -> None:
        publish(self.url, [(self.layout.telemetry(profile, device), orjson.dumps(readings))])

    def wait_stored(self, measurement: str, n: int) -> None:
        wait_written(self.influx, self.ingest, measurement, n)


@pytest.fixture
async def city(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, tmp_path: Path
) -> AsyncIterator[City]:
    registry = tmp_path / "cells-registry.csv"
    registry.write_text(
        "device_id,profile,district,latitude,longitude,address\n"
        + "".join(f"{d},water_pipe,{x},30,120,\n" for d, x in PIPES.items())
        + "".join(f"{d},power_meter,{x},30,120,\n" for d, x in METERS.items())
    )
    ingest = IngestProcess(
        ingest_env(
            servers,
            influx,
            topic_root,
            tmp_path,
            CITYSENSE_REGISTRY=str(registry),
            CITYSENSE_UNKNOWN_DEVICES="accept",  # stored under "unassigned"
        ),
        tmp_path / "ingest.log",
    )
    ingest.start()
    settings = api_settings(
        servers,
        influx,
        tmp_path,
        registry=registry,
        # Nothing warmed behind the tests' backs unless a test asks for it.
        api_aggregate_max_staleness=0.0,
        api_aggregate_warm_recent=0,
    )
    publisher = servers.mosquitto.url("citysense-simulator")
    city = City(httpx.AsyncClient(), settings, TopicLayout(topic_root), publisher, influx, ingest)
    day = yesterday()
    for n, device in enumerate(PIPES):
        city.send(
            "water_pipe",
            device,
            [
                {"ts": t // 1_000_000, "pressure": 200.0 + n + (t // Q) % 7}
                for t in range(day, day + 24 * H, Q)
            ],
        )
    for n, device in enumerate(METERS):
        city.send(
            "power_meter",
            device,
            [
                {
                    "ts": t // 1_000_000,
                    "activePower": 4.0,
                    "totalActiveEnergyImport": 1000.0 * n + k,
                }
                for k, t in enumerate(range(day, day + 24 * H, Q))
            ],
        )
    city.wait_stored("water_pipe", 96 * len(PIPES))
    city.wait_stored("power_meter", 96 * len(METERS))
    async with running(create_app(settings)) as api:
        city.api = api
        yield city
    ingest.terminate()


async def ask(api: httpx.AsyncClient, **params: Any) -> tuple[list[dict[str, Any]], str]:
    response = await api.get("/aggregates", params=params)
    assert response.status_code == 200, response.text
    return response.json()["rows"], response.headers[CELLS_HEADER]


def hourly_pressure(day: int, **extra: str) -> dict[str, str]:
    """The pipes' pressure per hour over the day beginning at `day` (ns)."""
    span = {"every": "1h", "start": rfc3339(day), "end": rfc3339(day + 24 * H)}
    return {"profile": "water_pipe", "field": "pressure", **extra, **span}


async def from_scratch(city: City, **params: Any) -> list[dict[str, Any]]:
    async with running(create_app(city.settings)) as fresh:
        rows, computed = await ask(fresh, **params)
    assert computed.split("/")[0] == computed.split("/")[1]  # nothing kept in a new app
    return rows


async def test_a_late_reading_recomputes_only_its_window(city: City) -> None:
    day = yesterday()
    question = hourly_pressure(day, agg="mean")
    first, computed = await ask(city.api, **question)
    assert computed == "48/48"  # 24 hours x 2 districts
    again, computed = await ask(city.api, **question)
    assert (again, computed) == (first, "0/48")

    city.send(
        "water_pipe", "WP-C0", [{"ts": (day + 5 * H + 7 * 60 * S) // 1_000_000, "pressure": 900.0}]
    )
    city.wait_stored("water_pipe", 96 * len(PIPES) + 1)
    late, computed = await ask(city.api, **question)
    assert computed == "1/48"  # North, 05:00
    changed = [(a, b) for a, b in zip(first, late, strict=True) if a != b]
    assert [(b["time"], b["district"]) for _, b in changed] == [(rfc3339(day + 5 * H), "North")]
    assert late == await from_scratch(city, **question)


def timing(response: httpx.Response) -> dict[str, float]:
    """Server-Timing's phases, in milliseconds."""
    phases = {}
    for item in response.headers["server-timing"].split(","):
        name, duration = item.strip().split(";dur=")
        phases[name] = float(duration)
    return phases


async def test_an_answer_says_where_its_time_went(city: City) -> None:
    question = {"profile": "water_pipe", "field": "pressure", "every": "1h"}
    first = timing(await city.api.get("/aggregates", params=question))
    assert list(first) == ["marks", "districts", "kept", "rollups", "readings", "rows", "app"]
    # The phases are parts of the request: together no longer than it (0.1 ms rounding each).
    assert sum(v for k, v in first.items() if k != "app") <= first["app"] + 0.5
    response = await city.api.get("/aggregates", params=question)
    assert response.headers[CELLS_HEADER] == "0/50", response.headers[CELLS_HEADER]
    # The stored district tags were read a moment ago: not again.
    assert list(timing(response)) == ["marks", "kept", "rows", "app"]


async def test_asks_arriving_together_share_one_read_of_the_marks(city: City) -> None:
    """With a staleness allowed, an answer's change marks read moments ago for another ask are
    used again (api.compute.cells.CellCache.marks), for less than a second; then read anew."""
    settings = city.settings.model_copy(update={"api_aggregate_max_staleness": 30.0})
    question = {"profile": "water_pipe", "field": "pressure", "every": "1h"}
    async with running(create_app(settings)) as api:
        await api.get("/aggregates", params=question)  # computes the cells
        await asyncio.sleep(MARKS_REUSE_S)
        read = timing(await api.get("/aggregates", params=question))
        shared = timing(await api.get("/aggregates", params=question))
        await asyncio.sleep(MARKS_REUSE_S)
        again = timing(await api.get("/aggregates", params=question))
    assert "marks" in read and "marks" not in shared and "marks" in again


async def test_a_district_first_written_now_is_answered_at_once(city: City) -> None:
    """The stored district tags are read at most every DISTRICTS_FRESH_S, but a district a
    marked write names is in the marks every question reads: a device not in the registry,
    stored under "unassigned" after the tags were read, has its row in the next answer."""
    day = yesterday()
    question = hourly_pressure(day)
    rows, _ = await ask(city.api, **question)
    assert {r["district"] for r in rows} == {"North", "South"}
    city.send("water_pipe", "WP-NEW", [{"ts": (day + 3 * H) // 1_000_000, "pressure": 77.0}])
    city.wait_stored("water_pipe", 96 * len(PIPES) + 1)
    rows, computed = await ask(city.api, **question)
    new = [r for r in rows if r["district"] == "unassigned"]
    assert [(r["time"], r["value"]) for r in new] == [(rfc3339(day + 3 * H), 77.0)]
    assert computed == "24/72", computed  # 24 hours x 3 districts: the new one computed
    assert rows == await from_scratch(city, **question)


async def test_a_late_counter_reset_recomputes_the_windows_after_it(city: City) -> None:
    day = yesterday()
    question = {
        "profile": "power_meter",
        "field": "totalActiveEnergyImport",
        "agg": "delta",
        "every": "hour",
        "start": rfc3339(day),
        "end": rfc3339(day + 24 * H),
    }
    first, computed = await ask(city.api, **question)
    assert computed == "48/48"
    # Four 15-minute steps of 1 kWh an hour; three in the first, which has no reading before it.
    assert {r["value"] for r in first if r["time"] != rfc3339(day)} == {4.0}
    # PM-C1 (South) replaced at 05:50: its new meter starts at 0.5.
    city.send(
        "power_meter",
        "PM-C1",
        [
            {
                "ts": (day + 5 * H + 50 * 60 * S) // 1_000_000,
                "activePower": 4.0,
                "totalActiveEnergyImport": 0.5,
            }
        ],
    )
    city.wait_stored("power_meter", 96 * len(METERS) + 1)
    late, computed = await ask(city.api, **question)
    # A counter's window depends on the readings before it: South from 05:00 on is recomputed.
    assert computed == "19/48"
    assert late == await from_scratch(city, **question)
    assert late != first


async def test_a_late_counter_reset_before_the_start_recomputes_every_window(
    city: City,
) -> None:
    day = yesterday()
    question = {
        "profile": "power_meter",
        "field": "totalActiveEnergyImport",
        "agg": "delta",
        "every": "hour",
        "start": rfc3339(day + 6 * H),
        "end": rfc3339(day + 12 * H),
    }
    first, computed = await ask(city.api, **question)
    assert computed == "12/12"
    # Before `start`, but it is the last reading before it: the first window's increase moves.
    late = (day + 5 * H + 50 * 60 * S) // 1_000_000
    city.send(
        "power_meter", "PM-C1", [{"ts": late, "activePower": 4.0, "totalActiveEnergyImport": 0.5}]
    )
    city.wait_stored("power_meter", 96 * len(METERS) + 1)
    again, computed = await ask(city.api, **question)
    assert computed == "6/12"  # South, every window: all depend on what came before
    assert again != first
    assert again == await from_scratch(city, **question)


async def test_the_default_window_is_whole_windows_so_it_is_kept(city: City) -> None:
    question = {"profile": "water_pipe", "field": "pressure", "agg": "max", "every": "15m"}
    first, computed = await ask(city.api, **question)
    total = computed.split("/")[1]
    assert computed == f"{total}/{total}"
    again, computed = await ask(city.api, **question)
    assert (again, computed) == (first, f"0/{total}")
    assert first == await from_scratch(city, **question)
    now_ms = time.time_ns() // 1_000_000
    city.send("water_pipe", "WP-C2", [{"ts": now_ms, "pressure": 950.0}])
    city.wait_stored("water_pipe", 96 * len(PIPES) + 1)
    latest, computed = await ask(city.api, **question)
    assert computed == f"1/{total}"  # South, the current 15 minutes
    assert latest == await from_scratch(city, **question)
    assert max(r["value"] for r in latest if r["district"] == "South") == 950.0


async def test_a_start_inside_a_change_window_still_sees_its_late_readings(city: City) -> None:
    day = yesterday()
    question = {
        "profile": "water_pipe",
        "field": "pressure",
        "agg": "max",
        "every": "1h",
        "start": rfc3339(day + 7 * 60 * S),
        "end": rfc3339(day + 3 * H),
    }
    first, computed = await ask(city.api, **question)
    assert computed == "6/6"
    late = (day + 8 * 60 * S) // 1_000_000  # after start, inside the change window 00:00-00:15
    city.send("water_pipe", "WP-C1", [{"ts": late, "pressure": 990.0}])
    city.wait_stored("water_pipe", 96 * len(PIPES) + 1)
    again, computed = await ask(city.api, **question)
    assert computed == "1/6"
    assert again[0] == {**first[0], "value": 990.0}
    assert again == await from_scratch(city, **question)


async def test_a_warmed_question_is_kept_before_anyone_asks(city: City) -> None:
    day = yesterday()
    question = hourly_pressure(day)
    settings = city.settings.model_copy(
        update={
            "api_aggregate_warm": f"profile=power_meter&field=activePower; {urlencode(question)}"
        }
    )
    app = create_app(settings)
    async with running(app) as api:
        cells = app.state.runtime.cells
        await until(lambda: len(cells) >= 48 + 50, 30, "both questions warmed", interval=0.05)
        rows, computed = await ask(api, **question)
        assert computed == "0/48"
        assert rows == await from_scratch(city, **question)


async def test_a_question_clients_keep_asking_is_kept_warm(city: City) -> None:
    settings = city.settings.model_copy(update={"api_aggregate_warm_recent": 10})
    app = create_app(settings)
    question = {"profile": "water_pipe", "field": "pressure", "agg": "max", "every": "15m"}
    async with running(app) as api:
        warmer = app.state.runtime.warmer
        _, computed = await ask(api, **question)
        assert computed.split("/")[0] == computed.split("/")[1]
        city.send("water_pipe", "WP-C0", [{"ts": time.time_ns() // 1_000_000, "pressure": 970.0}])
        city.wait_stored("water_pipe", 96 * len(PIPES) + 1)
        rounds = warmer.rounds
        await until(lambda: warmer.rounds >= rounds + 2, 30, "two warming rounds", interval=0.05)
        latest, computed = await ask(api, **question)
        assert computed.startswith("0/")  # the warmer computed the current window already
        assert max(r["value"] for r in latest if r["district"] == "North") == 970.0
        assert latest == await from_scratch(city, **question)


async def test_a_warm_question_the_contract_cannot_answer_stops_the_start(city: City) -> None:
    settings = city.settings.model_copy(
        update={"api_aggregate_warm": "profile=water_pipe&field=pressure&agg=delta"}
    )
    with pytest.raises(ConfigError, match="CITYSENSE_API_AGGREGATE_WARM, question 1"):
        async with running(create_app(settings)):
            pass
