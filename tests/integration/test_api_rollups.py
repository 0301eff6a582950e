"""Rollups kept as data (api.compute.keeper) against the real servers: readings go through a real
ingest process (which marks the windows it writes), including a late reading into a closed
window, a redelivered identical reading and a counter reset; the keeper writes its rollups into
the real InfluxDB. The oracle is an app with rollups switched off, which computes every cell from
the readings: each answer from rollups must equal it, per district and city-wide, per 15 minutes,
hour and day, for every aggregate rollups serve. A new app (an API restart) serves its first ask
from the rollups (the CitySense-Cells-Rollups header), and a window whose data changed after its
rollup was computed is computed from the readings, never served stale.

The keeper as deployed, `citysense rollups` (api.keeper_cli), a process of its own: the rollups it
writes are the ones a separate API serves, every cell of every question from them and each answer
equal to the oracle; a keeper SIGKILLed mid-round and started again, and two keepers at once
(made to compute the same windows, the rollups then checked against the raw readings too),
leave them exact; a keeper whose rounds died exits 1; SIGTERM exits 0."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from api.compute import keeper as keeper_module
from api.compute.keeper import RollupKeeper
from api.core.contract import Contract
from api.core.settings import ApiSettings
from api.keeper_cli import keep as keep_rollups
from api.main import create_app
from api.routes.aggregates import CELLS_HEADER, ROLLUPS_HEADER
from citysense.servers import LocalServers
from common.errors import InfluxUnavailable
from common.influx import InfluxConfig
from device_profiles import Profile
from tests.support.api import api_settings, running
from tests.support.influx import count, make_database
from tests.support.influx import rows as influx_rows
from tests.support.mqtt import publish
from tests.support.polling import wait_for
from tests.support.processes import (
    IngestProcess,
    RollupsProcess,
    ingest_env,
    rollups_env,
    wait_written,
)
from tests.support.times import S, rfc3339, yesterday
from wire import rollups as layout
from wire.retention import qualified
from wire.topics import TopicLayout

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

Q = 15 * 60 * S
H = 3600 * S
PIPES = {"WP-R0": "North", "WP-R1": "North", "WP-R2": "South"}
METERS = {"PM-R0": "North", "PM-R1": "South", "PM-R2": "South"}
LAMPS = {"SL-R0": "North", "SL-R1": "South", "SL-R2": "South"}
STEPS = 96  # a day of 15-minute readings per device

GAUGES = [
    {"profile": "water_pipe", "field": "pressure", "agg": agg}
    for agg in ("mean", "sum", "min", "max", "count", "spread")
]
QUESTIONS = [
    *GAUGES,
    {"profile": "water_pipe", "field": "leakDetected", "agg": "count", "equals": "true"},
    {"profile": "streetlight", "field": "powerState", "agg": "count", "equals": "on"},
    {"profile": "power_meter", "field": "totalActiveEnergyImport", "agg": "delta"},
    {"profile": "power_meter", "field": "totalActiveEnergyImport", "agg": "rate"},
]


@dataclass
class City:
    settings: ApiSettings
    layout: TopicLayout
    url: str
    influx: InfluxConfig
    ingest: IngestProcess

    def send(self, profile: str, device: str, readings: list[dict[str, Any]]) -> None:
        publish(self.url, [(self.layout.telemetry(profile, device), orjson.dumps(readings))])

    def wait_stored(self, measurement: str, n: int) -> None:
        wait_written(self.influx, self.ingest, measurement, n)


def pipe_reading(n: int, t: int) -> dict[str, Any]:
    return {
        "ts": t // 1_000_000,
        "pressure": 200.0 + 3 * n + (t // Q) % 7,
        "leakDetected": (t // H + n) % 3 == 0,
    }


def _registry(tmp_path: Path) -> Path:
    registry = tmp_path / "rollups-registry.csv"
    rows = [(PIPES, "water_pipe"), (METERS, "power_meter"), (LAMPS, "streetlight")]
    registry.write_text(
        "device_id,profile,district,latitude,longitude,address\n"
        + "".join(f"{d},{p},{x},30,120,\n" for devices, p in rows for d, x in devices.items())
    )
    return registry


@pytest.fixture
async def city(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, tmp_path: Path
) -> AsyncIterator[City]:
    async with city_on(servers, influx, topic_root, tmp_path) as made:
        yield made


@pytest.fixture
async def city_of_its_own(
    private_servers: LocalServers, topic_root: str, tmp_path: Path
) -> AsyncIterator[tuple[City, LocalServers]]:
    """The city on servers of this test alone, for a test that kills them."""
    influx = make_database(private_servers)
    async with city_on(private_servers, influx, topic_root, tmp_path) as made:
        yield made, private_servers


@asynccontextmanager
async def city_on(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, tmp_path: Path
) -> AsyncIterator[City]:
    """A day of readings of every profile, stored through a real ingest process."""
    registry = _registry(tmp_path)
    ingest = IngestProcess(
        ingest_env(servers, influx, topic_root, tmp_path, CITYSENSE_REGISTRY=str(registry)),
        tmp_path / "ingest.log",
    )
    ingest.start()
    settings = api_settings(
        servers,
        influx,
        tmp_path,
        registry=registry,
        # A rollup whose marks moved is never served: only exact answers are compared.
        api_aggregate_max_staleness=0.0,
        api_aggregate_warm_recent=0,
        # The tests run the keeper's rounds themselves (keep_once), not a background task.
        api_rollups_keep=False,
    )
    city = City(
        settings,
        TopicLayout(topic_root),
        servers.mosquitto.url("citysense-simulator"),
        influx,
        ingest,
    )
    day = yesterday()
    times = list(range(day, day + STEPS * Q, Q))
    for n, device in enumerate(PIPES):
        city.send(
            "water_pipe",
            device,
            [pipe_reading(n, t) for t in times],
        )
    for n, device in enumerate(METERS):
        # PM-R1's meter is replaced at 10:00: its counter starts again from 0.5 (a reset).
        city.send(
            "power_meter",
            device,
            [
                {
                    "ts": t // 1_000_000,
                    "activePower": 4.0,
                    "totalActiveEnergyImport": (
                        0.5 + k - 40 if n == 1 and k >= 40 else 1000.0 * n + 1.5 * k
                    ),
                }
                for k, t in enumerate(times)
            ],
        )
    for n, device in enumerate(LAMPS):
        city.send(
            "streetlight",
            device,
            [
                {
                    "ts": t // 1_000_000,
                    "powerState": "on" if (t // Q + n) % 4 < 2 else "off",
                    "powerConsumption": 50.0 + n,
                }
                for t in times
            ],
        )
    city.wait_stored("water_pipe", STEPS * len(PIPES))
    city.wait_stored("power_meter", STEPS * len(METERS))
    city.wait_stored("streetlight", STEPS * len(LAMPS))
    try:
        yield city
    finally:
        ingest.terminate()


async def ask(api: httpx.AsyncClient, params: dict[str, Any]) -> tuple[list[Any], str, int]:
    response = await api.get("/aggregates", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    return body["rows"], response.headers[CELLS_HEADER], int(response.headers[ROLLUPS_HEADER])


def same_rows(got: list[dict[str, Any]], want: list[dict[str, Any]], what: str) -> None:
    assert len(got) == len(want), what
    for a, b in zip(got, want, strict=True):
        value_a, value_b = a.pop("value"), b.pop("value")
        assert a == b, what
        if isinstance(value_b, float):
            assert value_a == pytest.approx(value_b, rel=1e-9), (what, a)
        else:
            assert value_a == value_b, (what, a)


async def quarter_against_the_oracle(city: City, start: int, what: str) -> tuple[str, int]:
    """Water pressure's mean per district over the quarter from `start`, asked of a new API
    (rollups served) and of the oracle (from the readings): the rows must be equal; the
    answer's cells computed and cells from rollups."""
    question = {
        **GAUGES[0],
        "every": "15m",
        "start": rfc3339(start),
        "end": rfc3339(start + Q),
        "group_by": "district",
    }
    oracle_settings = city.settings.model_copy(update={"api_rollups_serve": False})
    async with (
        running(create_app(city.settings)) as api,
        running(create_app(oracle_settings)) as oracle,
    ):
        rows, computed, rolled = await ask(api, question)
        want, _, _ = await ask(oracle, question)
        same_rows(rows, want, what)
    return computed, rolled


def questions(day: int) -> list[dict[str, Any]]:
    """Every question on every grain, per district and city-wide, over yesterday."""
    span = {"start": rfc3339(day), "end": rfc3339(day + 24 * H)}
    return [
        {**q, **span, "every": every, "group_by": group_by}
        for q in QUESTIONS
        for every in ("15m", "1h", "day")
        for group_by in ("district", "none")
    ]


async def keep(settings: ApiSettings) -> RollupKeeper:
    """An app whose keeper runs one round; its keeper, to run more."""
    app = create_app(settings)
    async with running(app):
        keeper: RollupKeeper = app.state.runtime.rollups
        await keeper.keep_once()
    return keeper


@pytest.mark.parametrize("fields_per_read", [1, 3])
async def test_rollups_equal_the_readings_and_survive_a_restart(
    city: City, fields_per_read: int
) -> None:
    """Whatever number of fields one keeper read asks (a reading may lack some of them)."""
    city.settings = city.settings.model_copy(
        update={"api_rollups_fields_per_read": fields_per_read}
    )
    day = yesterday()
    app = create_app(city.settings)
    async with running(app):
        keeper: RollupKeeper = app.state.runtime.rollups
        assert await keeper.keep_once() > 0  # the backfill: nothing was kept before
        # Later data: a redelivered (identical) reading, then a late one into a closed window
        # and a lamp's late state change.
        city.send("water_pipe", "WP-R0", [pipe_reading(0, day + 3 * Q)])
        late = {"ts": (day + 5 * H + 7 * 60 * S) // 1_000_000, "pressure": 900.0}
        city.send("water_pipe", "WP-R2", [late])
        city.send(
            "power_meter",
            "PM-R0",
            [
                {
                    "ts": (day + 7 * H + 5 * 60 * S) // 1_000_000,
                    "activePower": 4.0,
                    "totalActiveEnergyImport": 1015.0,  # a late reading between two others
                }
            ],
        )
        city.send(
            "streetlight",
            "SL-R0",
            [{"ts": (day + 23 * H + 14 * 60 * S) // 1_000_000, "powerState": "on"}],
        )
        city.wait_stored("water_pipe", STEPS * len(PIPES) + 1)
        city.wait_stored("power_meter", STEPS * len(METERS) + 1)
        city.wait_stored("streetlight", STEPS * len(LAMPS) + 1)

        # Before the keeper saw the late data: the changed windows are computed from the
        # readings, the others served from rollups — and the answer is still exact.
        oracle_settings = city.settings.model_copy(update={"api_rollups_serve": False})
        question = {**GAUGES[0], "every": "1h", "start": rfc3339(day)}
        question["end"] = rfc3339(day + 24 * H)
        async with running(create_app(city.settings)) as api:
            rows, computed, rolled = await ask(api, question)
        async with running(create_app(oracle_settings)) as oracle:
            want, computed_there, rolled_there = await ask(oracle, question)
        same_rows(rows, want, "before the keeper's next round")
        # The late South 05:00; the redelivery wrote nothing new (ingest knew it), so North
        # 00:00 is still served from its rollup, and counts the reading once.
        assert computed == "1/48"
        assert rolled == 47
        assert (computed_there, rolled_there) == ("48/48", 0)

        assert await keeper.keep_once() > 0  # the windows whose marks moved

    # A restart: a new app, nothing kept in memory; every cell comes from the rollups.
    async with (
        running(create_app(city.settings)) as api,
        running(create_app(oracle_settings)) as oracle,
    ):
        for params in questions(day):
            rows, computed, rolled = await ask(api, params)
            total = int(computed.split("/")[1])
            # A rate is kept as its delta: the delta asked just before left its cells here.
            expected = 0 if params["agg"] == "rate" else total
            assert (computed, rolled) == (f"0/{total}", expected), params
            want, _, rolled_there = await ask(oracle, params)
            assert rolled_there == 0
            same_rows(rows, want, str(params))
        # Asked again: from the cells this app kept, neither rollups nor readings.
        rows, computed, rolled = await ask(api, questions(day)[0])
        assert (computed.split("/")[0], rolled) == ("0", 0)


async def test_first_and_last_are_still_computed_from_the_readings(city: City) -> None:
    day = yesterday()
    await keep(city.settings)
    params = {
        "profile": "water_pipe",
        "field": "pressure",
        "agg": "last",
        "every": "1h",
        "start": rfc3339(day),
        "end": rfc3339(day + 24 * H),
    }
    async with running(create_app(city.settings)) as api:
        _, computed, rolled = await ask(api, params)
        assert (computed, rolled) == ("48/48", 0)
        # A window off the grains (2 h) too.
        _, computed, rolled = await ask(api, {**params, "agg": "mean", "every": "2h"})
        assert (computed, rolled) == ("24/24", 0)


def keeper(city: City, tmp_path: Path, name: str = "rollups", **extra: str) -> RollupsProcess:
    env = rollups_env(
        city.influx, city.settings.registry, CITYSENSE_API_ROLLUPS_EVERY="0.5", **extra
    )
    return RollupsProcess(env, tmp_path / f"{name}.log")


async def assert_served_exactly_from_rollups(city: City) -> None:
    """A new API (nothing in memory, keeping no rollups itself) answers every question of the
    day from the stored rollups alone, each answer equal to the oracle's from the readings."""
    assert not city.settings.api_rollups_keep
    oracle_settings = city.settings.model_copy(update={"api_rollups_serve": False})
    async with (
        running(create_app(city.settings)) as api,
        running(create_app(oracle_settings)) as oracle,
    ):
        for params in questions(yesterday()):
            rows, computed, rolled = await ask(api, params)
            total = int(computed.split("/")[1])
            # A rate is kept as its delta: the delta asked just before left its cells here.
            expected = 0 if params["agg"] == "rate" else total
            assert (computed, rolled) == (f"0/{total}", expected), params
            want, _, _ = await ask(oracle, params)
            same_rows(rows, want, str(params))


async def test_the_keeper_process_writes_the_rollups_the_api_serves(
    city: City, tmp_path: Path
) -> None:
    # Chunks of 50 rows: a device's day of readings comes in parts, a district in batches.
    process = keeper(city, tmp_path, CITYSENSE_API_ROLLUPS_READ_ROWS="50")
    process.start()
    process.wait_ready()
    assert process.status("/live") == 200
    # Below the API's priority (CITYSENSE_API_ROLLUPS_NICE, 10 by default): the 19th field of
    # /proc/<pid>/stat, after the parenthesised command name.
    assert process.proc is not None
    stat = Path(f"/proc/{process.proc.pid}/stat").read_text()
    assert int(stat.rsplit(")", 1)[1].split()[16]) == os.getpriority(os.PRIO_PROCESS, 0) + 10
    assert process.metric("windows_computed_total") > 0
    assert process.metric("ready") == 1.0
    await assert_served_exactly_from_rollups(city)
    # A reading into a closed window: the keeper computes that window again on its own.
    day = yesterday()
    late = {"ts": (day + 5 * H + 7 * 60 * S) // 1_000_000, "pressure": 7.0}
    city.send("water_pipe", "WP-R2", [late])
    city.wait_stored("water_pipe", STEPS * len(PIPES) + 1)
    rounds = process.metric("rounds_total")
    wait_for(lambda: process.metric("rounds_total") >= rounds + 2, 30, 0.1, "two more rounds")
    await assert_served_exactly_from_rollups(city)
    assert process.terminate() == 0


async def test_a_keeper_killed_mid_round_and_started_again_leaves_exact_rollups(
    city: City, tmp_path: Path
) -> None:
    """SIGKILL at random moments of the backfill, several times: a window is one point, written
    whole and overwritten by the next keeper, never incremented; whatever a killed keeper did
    not write, the next one computes. At least one kill must land mid-round (some rollups
    written, not all)."""
    rng = random.Random(15)
    process = keeper(city, tmp_path, CITYSENSE_API_QUERY_CONCURRENCY="1")
    mid_round = 0  # kills that found rollups written and the round not over

    def begun() -> bool:
        return process.metric("windows_computed_total") > 0 or process.metric("ready") == 1

    for _ in range(20):
        process.start()
        wait_for(lambda: process.status("/live") == 200, 30, 0.02, "rollups /live")
        # From its first window written (how long that takes is InfluxDB's: at a fixed delay
        # after /live, a busy InfluxDB had every kill land before it), a random moment after.
        wait_for(begun, 30, 0.01, "the keeper's first window written")
        time.sleep(rng.uniform(0.0, 0.1))
        ready, written = process.metric("ready"), process.metric("windows_computed_total")
        process.kill()
        mid_round += ready == 0 and written > 0
        if mid_round == 3:
            break
    assert mid_round, "no kill landed mid-round"
    process.start()
    process.wait_ready()
    await assert_served_exactly_from_rollups(city)


async def test_influxdb_killed_mid_round_and_started_again_leaves_exact_rollups(
    city_of_its_own: tuple[City, LocalServers], tmp_path: Path
) -> None:
    """InfluxDB SIGKILLed while the keeper backfills (some windows written, not all), started
    again a second later: the round fails on the lost connection, the keeper lives on, and its
    next rounds leave every window exact, against the oracle and against the raw readings.
    (Whether the kill lands inside a chunked read or between requests is not controlled: that
    a read cut short raises rather than ends is common.influx's, not shown here.)"""
    city, stack = city_of_its_own
    # Chunks of 50 rows, one unit at a time: a backfill of many reads, long enough to cut.
    process = keeper(
        city, tmp_path, CITYSENSE_API_QUERY_CONCURRENCY="1", CITYSENSE_API_ROLLUPS_READ_ROWS="50"
    )
    process.start()
    wait_for(lambda: process.status("/live") == 200, 30, 0.02, "rollups /live")
    wait_for(
        lambda: process.metric("windows_computed_total") > 0, 30, 0.01, "a first window written"
    )
    stack.influxdb.kill()
    # No round ends while InfluxDB is dead: not ready now means killed mid-backfill.
    assert process.metric("ready") == 0, "the backfill ended before InfluxDB was killed"
    time.sleep(1)
    assert process.status("/live") == 200
    stack.influxdb.start()
    process.wait_ready()
    assert process.metric("round_failures_total") >= 1
    await assert_served_exactly_from_rollups(city)
    assert_rollups_equal_the_raw_readings(city)
    assert process.terminate() == 0


def assert_rollups_equal_the_raw_readings(city: City) -> None:
    """The stored rollups of water_pipe's pressure for yesterday, every grain and district,
    against the numbers worked out here from the raw readings InfluxDB holds: not through the
    API's own code, so an error shared by the keeper and /aggregates is found too."""
    day = yesterday()
    span = f"WHERE time >= {day} AND time < {day + 24 * H}"
    readings: list[dict[str, Any]] = influx_rows(
        city.influx, f"SELECT * FROM {qualified('water_pipe')} {span}"
    )
    kept: list[dict[str, Any]] = influx_rows(
        city.influx,
        f"SELECT * FROM {qualified(layout.MEASUREMENT)} {span} AND \"profile\" = 'water_pipe'",
    )
    widths = {"15m": Q, "1h": H, "day": 24 * H}
    assert len(kept) == len(set(PIPES.values())) * (STEPS + 24 + 1)  # every window, once
    for point in kept:
        start, end = point["time"], point["time"] + widths[point["grain"]]
        by_device: dict[str, list[float]] = defaultdict(list)
        for reading in readings:
            if reading["district"] == point["district"] and start <= reading["time"] < end:
                by_device[reading["device_id"]].append(reading["pressure"])
        means = [sum(values) / len(values) for values in by_device.values()]
        want = {
            "pressure.n": len(by_device),
            "pressure.c": sum(len(values) for values in by_device.values()),
            "pressure.sm": sum(means),
            "pressure.mnm": min(means),
            "pressure.mxm": max(means),
            "pressure.lo": min(min(values) for values in by_device.values()),
            "pressure.hi": max(max(values) for values in by_device.values()),
        }
        got = {key: point[key] for key in want}
        assert got == pytest.approx(want, rel=1e-9), (point["grain"], point["district"], start)


async def test_two_keepers_at_once_stay_exact(city: City, tmp_path: Path) -> None:
    """Two keepers' first rounds over the same windows: the first is paused (SIGSTOP) once it
    planned its round and wrote its first windows; the second backfills every window meanwhile;
    the first, resumed, writes the rest of its plan over the second's windows. That it did is
    checked (windows of yesterday written after it resumed, all of which the second had written
    already), and then the rollups: equal to the raw readings, and serving every answer as the
    oracle gives it."""
    day = yesterday()
    # One unit at a time, read in small chunks: the first keeper's backfill lasts long enough
    # to be paused part-way through.
    slow = {"CITYSENSE_API_QUERY_CONCURRENCY": "1", "CITYSENSE_API_ROLLUPS_READ_ROWS": "50"}
    first, second = keeper(city, tmp_path, "first", **slow), keeper(city, tmp_path, "second")
    first.start()
    wait_for(
        lambda: first.status("/live") == 200 and first.metric("windows_computed_total") > 0,
        30,
        0.005,
        "the first keeper's first windows",
    )
    first.pause()
    second.start()
    second.wait_ready()
    assert second.metric("windows_computed_total") > 0

    # Every closed window of yesterday (quarters and hours, of each profile and district) has
    # its rollup now, whoever wrote it: the first keeper's rest are all overwrites.
    closed = (
        f"WHERE time >= {day} AND time < {day + 24 * H} AND (\"grain\" = '15m' OR \"grain\" = '1h')"
    )
    parts = sum(len(set(devices.values())) for devices in (PIPES, METERS, LAMPS))
    assert count(city.influx, layout.MEASUREMENT, closed) == parts * (STEPS + 24)
    resumed = time.time_ns()
    first.resume()
    first.wait_ready()
    overwritten = count(city.influx, layout.MEASUREMENT, f'{closed} AND "at" > {resumed}')
    assert overwritten > 0, "the first keeper wrote no window the second had written"

    assert_rollups_equal_the_raw_readings(city)
    await assert_served_exactly_from_rollups(city)
    assert first.terminate() == 0
    assert second.terminate() == 0


async def test_a_keeper_whose_rounds_die_exits_1(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """InfluxDB's failures are retried; anything else ends the rounds, and the process must not
    go on looking alive: it stops, status 1, for its supervisor to restart it."""

    async def dies(_self: RollupKeeper) -> int:
        raise RuntimeError("injected: the rollup keeper dies")

    monkeypatch.setattr(RollupKeeper, "keep_once", dies)
    settings = api_settings(servers, influx, tmp_path, api_rollups_port=0)
    profiles, registry = settings.load_contract()
    status = await asyncio.wait_for(keep_rollups(settings, Contract.build(profiles, registry)), 30)
    assert status == 1


async def test_a_window_is_written_just_before_it_begins_and_served_exact(
    city: City, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keeper's clock 20 s before yesterday's 12:00: the quarter and hour beginning then are
    written already (here they hold readings, stored ahead of the keeper's time), and nothing
    beginning later than AHEAD_NS; an API asked for that quarter serves it from the rollup,
    equal to the oracle's answer from the readings."""
    noon = yesterday() + 12 * H
    clock = [noon - 20 * S]
    monkeypatch.setattr(keeper_module, "now_ns", lambda: clock[0])

    def kept(grain: str, start: int) -> int:
        where = f"WHERE \"grain\" = '{grain}' AND time = {start}"
        return count(city.influx, layout.MEASUREMENT, where)

    # Windows still filling (whose readings, ahead of this clock, move their marks) are not
    # computed again here: only the rule under test writes the next quarter.
    slow = {"api_rollups_open_every": 1e9, "api_rollups_open_day_every": 1e9}
    app = create_app(city.settings.model_copy(update=slow))
    async with running(app):
        keeper = app.state.runtime.rollups
        assert await keeper.keep_once() > 0  # the first round: the backfill, noon included
        assert kept("15m", noon) == kept("1h", noon) == 6  # 3 profiles, 2 districts
        assert kept("15m", noon + Q) == kept("1h", noon + H) == 0  # beginning later: not yet
        clock[0] = noon + Q - 20 * S  # a later round: the next quarter, and nothing beyond
        assert await keeper.keep_once() > 0
        assert kept("15m", noon + Q) == 6
        assert kept("15m", noon + 2 * Q) == kept("1h", noon + H) == 0
    monkeypatch.undo()
    computed, rolled = await quarter_against_the_oracle(
        city, noon, "the quarter written before it began"
    )
    assert (computed, rolled) == ("0/2", 2)


def record_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The windows of every read the keeper makes of the readings, recorded as it makes them."""
    reads: list[tuple[int, int]] = []
    compute = keeper_module.compute_rollups

    async def recorded(*args: Any, **kwargs: Any) -> Any:
        reads.extend(args[4])
        return await compute(*args, **kwargs)

    monkeypatch.setattr(keeper_module, "compute_rollups", recorded)
    return reads


async def test_a_closed_window_is_computed_again_only_if_its_marks_moved(
    city: City, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Yesterday's noon quarter is computed before it begins (its readings are stored already,
    ahead of the keeper's clock); once it closed, a round does not read it again while its marks
    hold, and does once a late reading moved them, the answer then equal to the oracle's."""
    noon = yesterday() + 12 * H
    quarter = (noon, noon + Q)
    clock = [noon - 20 * S]
    monkeypatch.setattr(keeper_module, "now_ns", lambda: clock[0])
    slow = {"api_rollups_open_every": 1e9, "api_rollups_open_day_every": 1e9}
    app = create_app(city.settings.model_copy(update=slow))
    async with running(app):
        keeper = app.state.runtime.rollups
        assert await keeper.keep_once() > 0  # the backfill, the noon quarter included
        reads = record_reads(monkeypatch)
        clock[0] = noon + Q + 2 * S  # the round after the quarter closed
        assert await keeper.keep_once() > 0  # the quarter that began: fresh
        assert (noon + Q, noon + 2 * Q) in reads
        assert quarter not in reads, "a closed quarter whose marks held was read again"
        late = {"ts": (noon + 7 * 60 * S) // 1_000_000, "pressure": 1.0}
        city.send("water_pipe", "WP-R2", [late])
        city.wait_stored("water_pipe", STEPS * len(PIPES) + 1)
        clock[0] += 5 * S
        assert await keeper.keep_once() > 0
        assert quarter in reads, "a closed quarter whose marks moved was not read again"
    monkeypatch.undo()
    computed, rolled = await quarter_against_the_oracle(
        city, noon, "the closed quarter computed again after a late reading"
    )
    assert (computed, rolled) == ("0/2", 2)


async def test_a_window_not_begun_and_not_marked_is_written_without_a_read(
    city: City, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keeper's clock 20 s before the quarter after yesterday's last reading: that quarter
    has no marks, so its rollups are written (empty) without reading InfluxDB's readings, and
    served as such: equal to the oracle's answer from the readings (no rows)."""
    after = yesterday() + STEPS * Q  # no reading at or after it
    clock = [after - 20 * S]
    monkeypatch.setattr(keeper_module, "now_ns", lambda: clock[0])
    reads = record_reads(monkeypatch)
    app = create_app(city.settings)
    async with running(app):
        assert await app.state.runtime.rollups.keep_once() > 0
    kept = count(city.influx, layout.MEASUREMENT, f"WHERE \"grain\" = '15m' AND time = {after}")
    assert kept == 6  # 3 profiles, 2 districts
    assert reads and all(w[0] < after for w in reads)
    monkeypatch.undo()
    computed, rolled = await quarter_against_the_oracle(
        city, after, "the empty quarter written before it began"
    )
    assert rolled == 2, computed


async def open_day_against_the_oracle(city: City, day: int, what: str) -> None:
    """Every question per day (served whole from the rollups) and per hour, of a new API and
    of the oracle: equal."""
    oracle_settings = city.settings.model_copy(update={"api_rollups_serve": False})
    async with (
        running(create_app(city.settings)) as api,
        running(create_app(oracle_settings)) as oracle,
    ):
        for params in questions(day):
            if params["every"] == "15m" or params["agg"] == "rate":
                continue
            rows, computed, rolled = await ask(api, params)
            if params["every"] == "day":
                assert rolled == int(computed.split("/")[1]), (what, params)
            want, _, _ = await ask(oracle, params)
            same_rows(rows, want, f"{what}: {params}")


@asynccontextmanager
async def keeper_at_23_50(
    city: City, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[RollupKeeper, list[int]]]:
    """The keeper of a running app whose clock (the list's one item: move it) reads yesterday
    23:50, after its first round (the backfill; the open day's ledger built). Every moved open
    window is computed at each round; the open day without a ledger at most every 120 s (a
    read of the whole day)."""
    clock = [yesterday() + 23 * H + 50 * 60 * S]
    monkeypatch.setattr(keeper_module, "now_ns", lambda: clock[0])
    often = {"api_rollups_open_every": 0.0, "api_rollups_open_day_every": 120.0}
    app = create_app(city.settings.model_copy(update=often))
    async with running(app):
        keeper = app.state.runtime.rollups
        assert await keeper.keep_once() > 0
        yield keeper, clock


async def test_an_open_day_is_read_after_its_ledger_only_and_stays_exact(
    city: City, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keeper's clock at yesterday 23:50 (after its last readings: the marks the keeper
    reads are all there are), the day still open. The first round reads the whole day and
    keeps its ledger up to 23:00 (api.compute.ledger); once readings land in the open hour (a
    lamp's state, a pipe's pressure, a meter's counter), the next round reads the day from
    23:00 only, and the day's rollups, served, equal the oracle's answers from the readings; a
    late reading into 05:00, inside the ledger, drops it: the day is read whole again when it
    is next due (`api_rollups_open_day_every`), and is exact again."""
    day = yesterday()
    async with keeper_at_23_50(city, monkeypatch) as (keeper, clock):
        reads = record_reads(monkeypatch)
        at = (day + 23 * H + 47 * 60 * S) // 1_000_000
        city.send("water_pipe", "WP-R0", [{"ts": at, "pressure": 333.0}])
        city.send("streetlight", "SL-R1", [{"ts": at, "powerState": "low"}])
        meter = {"ts": at, "activePower": 4.0, "totalActiveEnergyImport": 143.0}
        city.send("power_meter", "PM-R0", [meter])
        city.wait_stored("water_pipe", STEPS * len(PIPES) + 1)
        city.wait_stored("power_meter", STEPS * len(METERS) + 1)
        city.wait_stored("streetlight", STEPS * len(LAMPS) + 1)
        clock[0] += 5 * S
        assert await keeper.keep_once() > 0
        assert reads, "the open day's moved windows were not computed"
        assert min(w[0] for w in reads) == day + 23 * H, "the day was read before its ledger"
        await open_day_against_the_oracle(city, day, "the open day from its ledger")

        reads.clear()
        late = {"ts": (day + 5 * H + 7 * 60 * S) // 1_000_000, "pressure": 900.0}
        city.send("water_pipe", "WP-R2", [late])
        city.wait_stored("water_pipe", STEPS * len(PIPES) + 2)
        clock[0] += 5 * S
        assert await keeper.keep_once() > 0  # the late reading's hour; the ledger dropped
        assert min(w[0] for w in reads) == day + 5 * H
        reads.clear()
        clock[0] += 120 * S  # the open day, without a ledger, is due again: read whole
        assert await keeper.keep_once() > 0
        assert min(w[0] for w in reads) == day, "the day was not read whole to rebuild its ledger"
    await open_day_against_the_oracle(city, day, "the open day read whole after a late reading")


async def test_an_open_day_with_its_ledger_closes_at_midnight_exact(
    city: City, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger of yesterday, built at 23:50, and readings landing after it in its last hour
    (23:47, 23:58): once the keeper's clock passes midnight the day is closed, and its rollups,
    served whole, equal the oracle's answers from the readings; today's first round reads
    today from its midnight, not the closed day's ledger's hour."""
    day = yesterday()
    async with keeper_at_23_50(city, monkeypatch) as (keeper, clock):
        for minute, pressure in ((47, 321.0), (58, 654.0)):
            at = (day + 23 * H + minute * 60 * S) // 1_000_000
            city.send("water_pipe", "WP-R1", [{"ts": at, "pressure": pressure}])
            meter = {"ts": at, "activePower": 4.0, "totalActiveEnergyImport": 150.0 + minute}
            city.send("power_meter", "PM-R2", [meter])
        city.wait_stored("water_pipe", STEPS * len(PIPES) + 2)
        city.wait_stored("power_meter", STEPS * len(METERS) + 2)
        reads = record_reads(monkeypatch)
        clock[0] = day + 24 * H + 5 * 60 * S
        assert await keeper.keep_once() > 0
        today = [w for w in reads if w[0] >= day + 24 * H]
        assert today and min(w[0] for w in today) == day + 24 * H
    await open_day_against_the_oracle(city, day, "the day closed at midnight after its ledger")


async def test_a_window_written_early_is_written_again_just_before_it_begins(
    city: City, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quarter after yesterday's last reading, written (empty, unmarked) by a round 50 s
    before it begins: a round 20 s before leaves it, one within REFRESH_NS of its beginning
    writes it again (its time of computing that round's), still without a read; so when it
    begins and readings move its marks, its rollup is young enough to be served."""
    after = yesterday() + STEPS * Q  # no reading at or after it
    clock = [after - 50 * S]
    monkeypatch.setattr(keeper_module, "now_ns", lambda: clock[0])
    app = create_app(city.settings)

    def computed_at() -> set[int]:
        found = influx_rows(
            city.influx,
            f'SELECT "at" FROM {qualified(layout.MEASUREMENT)} '
            f"WHERE \"grain\" = '15m' AND time = {after}",
        )
        return {int(r["at"]) for r in found}

    async with running(app):
        keeper = app.state.runtime.rollups
        assert await keeper.keep_once() > 0
        assert computed_at() == {after - 50 * S}
        clock[0] = after - 20 * S
        await keeper.keep_once()
        assert computed_at() == {after - 50 * S}, "written again long before it begins"
        reads = record_reads(monkeypatch)
        clock[0] = after - 8 * S
        assert await keeper.keep_once() >= 6  # 3 profiles, 2 districts
        assert computed_at() == {after - 8 * S}
        assert all(w[0] < after for w in reads), "read to be written again"


async def test_a_round_failing_while_it_plans_leaves_nothing_pending(
    city: City, monkeypatch: pytest.MonkeyPatch
) -> None:
    """InfluxDB gone while the keeper plans its last profile: the earlier profiles' units were
    counted as pending outside the round's reset, and grew by as many every failed round."""
    real_oldest, real_plan = RollupKeeper._oldest_reading, RollupKeeper._plan
    last = list(Contract.build(*city.settings.load_contract()).profiles)[-1]
    planned: list[int] = []  # units pending after each profile's plan

    async def oldest(self: RollupKeeper, profile: Profile) -> int | None:
        if profile.profile == last:
            raise InfluxUnavailable("injected: InfluxDB gone while planning")
        return await real_oldest(self, profile)

    async def plan(self: RollupKeeper, profile: Profile, since: int) -> Any:
        made = await real_plan(self, profile, since)
        planned.append(self.progress.pending)
        return made

    monkeypatch.setattr(RollupKeeper, "_oldest_reading", oldest)
    monkeypatch.setattr(RollupKeeper, "_plan", plan)
    app = create_app(city.settings)
    async with running(app):
        keeper: RollupKeeper = app.state.runtime.rollups
        for _ in range(2):
            with pytest.raises(InfluxUnavailable):
                await keeper.keep_once()
            assert keeper.progress.pending == 0
    assert planned and max(planned) > 0  # units were planned before the failure
