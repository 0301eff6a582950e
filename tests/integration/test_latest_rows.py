"""Each device's newest reading kept as a row (wire.latest) on the real broker and InfluxDB: ingest
keeps them and never moves one backwards (a late reading, a restart in between); an API whose
first load read the readings makes them whole; a new replica with no snapshot and no peer then
starts from them, with what ingest stored since; and two devices whose ids share a slot are
both read from their readings."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import orjson
import pytest

from api.core.contract import Contract
from api.core.settings import ApiSettings
from api.live import rows as rows_module
from api.live.rebuild import Built, build_rows
from api.live.service import Live
from api.main import create_app
from citysense import cli
from citysense.servers import LocalServers
from common.errors import InfluxUnavailable
from common.influx import AsyncInfluxClient, InfluxClient, InfluxConfig
from common.schema import IMPORT, Retention, ensure_schema, withdraw_rows_whole
from device_profiles import load_profiles
from ingest import latest as latest_module
from ingest.changes import change_lines
from ingest.latest import LatestRows
from ingest.settings import IngestSettings
from ingest.stages import Enriched
from tests.support.api import api_settings, running
from tests.support.influx import rows
from tests.support.ingest import ingest_settings, running_worker
from tests.support.mqtt import publish
from tests.support.polling import until, wait_for
from tests.support.seeding import Point, Scalar, line_protocol
from tests.support.times import S, rfc3339
from wire import latest as layout
from wire.changes import window_of
from wire.retention import CHANGES, LATEST, measurement_of, qualified
from wire.topics import TopicLayout

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

LAMPS = ("SL-000001", "SL-000002", "SL-000003")  # of the shipped sample registry
POWER = layout.key_of("streetlight", "powerConsumption", "number")


def lamp(time_ns: int, power: float) -> bytes:
    return orjson.dumps({"ts": time_ns // 1_000_000, "powerState": "on", "powerConsumption": power})


NAMED = "the full load the point names"


def kept(influx: InfluxConfig) -> dict[str, dict[str, tuple[int, float]]]:
    """Per writer tag, each device's row: (reading time, power); the full load the complete
    point names (wire.latest) as NAMED."""
    named = _named(influx)
    found: dict[str, dict[str, tuple[int, float]]] = {}
    query = f'SELECT * FROM "{LATEST}"."{layout.MEASUREMENT}"'
    for row in rows(influx, query):
        tag = str(row["writer"])
        writer = found.setdefault(NAMED if named and tag == named else tag, {})
        writer[str(row["device"])] = (int(str(row["at"])), float(str(row[POWER])))
    return found


def _named(influx: InfluxConfig) -> str:
    points = rows(influx, f'SELECT * FROM "{LATEST}"."{layout.COMPLETE}"')
    return layout.recorded_rows(points[0]) if points else ""


def publish_and_wait(
    servers: LocalServers, settings: IngestSettings, *rounds: list[tuple[str, bytes]]
) -> None:
    """Each round of messages published and stored before the next, to one worker."""
    with running_worker(settings) as worker:
        sent = 0
        for messages in rounds:
            publish(servers.mosquitto.url("citysense-simulator"), messages)
            sent += len(messages)
            wait_for(lambda n=sent: worker.stats.messages_acked >= n, 20, what="every ack")


def test_ingest_keeps_each_device_s_newest_reading_and_never_moves_it_back(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, now: int
) -> None:
    settings = ingest_settings(servers, influx, topic_root)
    layout_ = TopicLayout(topic_root)
    one, two = (layout_.telemetry("streetlight", d) for d in LAMPS[:2])
    first = [(one, lamp(now - 60 * S, 10.0)), (one, lamp(now - 30 * S, 20.0))]
    # The second round: a late reading, older than the row: stored as a reading, the row stays.
    late = [(one, lamp(now - 45 * S, 15.0))]
    publish_and_wait(servers, settings, [*first, (two, lamp(now - 50 * S, 5.0))], late)
    expected = {LAMPS[0]: (now - 30 * S, 20.0), LAMPS[1]: (now - 50 * S, 5.0)}
    assert kept(influx) == {settings.client_id: expected}
    # Another, to a worker started again: it read its rows back, and still keeps them.
    publish_and_wait(servers, settings, [(one, lamp(now - 40 * S, 17.0))])
    assert kept(influx) == {settings.client_id: expected}
    assert len(rows(influx, "SELECT powerConsumption FROM streetlight")) == 5
    # A newer one moves it.
    publish_and_wait(servers, settings, [(two, lamp(now - 10 * S, 6.0))])
    expected[LAMPS[1]] = (now - 10 * S, 6.0)
    assert kept(influx) == {settings.client_id: expected}


def _store(influx: InfluxConfig, points: list[Point]) -> None:
    """As a writer of readings that keeps no rows (an older version, another program)."""
    with InfluxClient(influx) as client:
        client.write(line_protocol(points))
        changes = {(p.measurement, p.district, window_of(p.time_ns)) for p in points}
        client.write("\n".join(change_lines(changes)).encode(), policy=CHANGES)


async def _build(settings: ApiSettings, client: AsyncInfluxClient) -> Built:
    """The set-up's build of the rows (api.live.rebuild) through `client`, closed after."""
    try:
        return await build_rows(settings, Contract.build(*settings.load_contract()), client, str)
    finally:
        await client.aclose()


def _refuse_the_complete_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """InfluxDB gone (or the API stopped) just before the point saying the rows whole, which
    every full load and compaction writes last: every other write goes through."""
    real = AsyncInfluxClient.write

    async def write(self: AsyncInfluxClient, body: bytes, **kwargs: Any) -> None:
        if body.startswith(layout.COMPLETE.encode()):
            raise InfluxUnavailable("injected: InfluxDB gone before the point")
        await real(self, body, **kwargs)

    monkeypatch.setattr(AsyncInfluxClient, "write", write)


def _whole(influx: InfluxConfig) -> bool:
    return bool(rows(influx, f'SELECT * FROM "{LATEST}"."{layout.COMPLETE}"'))


async def _state(settings: ApiSettings) -> tuple[str | None, dict[str, object]]:
    app = create_app(settings)
    found = {}
    async with running(app) as client:
        for device in LAMPS:
            reading = (await client.get(f"/devices/{device}")).json()["reading"]
            if reading is not None:
                found[device] = reading
        started = app.state.runtime.live.started_from
    return started, found


def _reading(time_ns: int, power: float) -> dict[str, object]:
    return {"time": rfc3339(time_ns), "values": {"powerState": "on", "powerConsumption": power}}


def _api(servers: LocalServers, influx: InfluxConfig, tmp_path: Path, name: str) -> ApiSettings:
    registry = ingest_settings(servers, influx, "unused").registry
    return api_settings(servers, influx, tmp_path, registry=registry, api_data_dir=tmp_path / name)


def _light(device: str, time_ns: int, power: float) -> Point:
    values: dict[str, Scalar] = {"powerState": "on", "powerConsumption": power}
    return Point("streetlight", device, "North", values, time_ns)


async def test_a_new_replica_starts_from_the_rows_with_what_ingest_stored_since(
    servers: LocalServers,
    influx: InfluxConfig,
    topic_root: str,
    tmp_path: Path,
    now: int,
) -> None:
    # Stored before any writer kept rows: the first API loads from the readings.
    _store(influx, [_light(LAMPS[0], now - 7200 * S, 1.0), _light(LAMPS[1], now - 7200 * S, 2.0)])
    first = create_app(_api(servers, influx, tmp_path, "a"))
    async with running(first):
        assert first.state.runtime.live.started_from == "influxdb"
        # ... and writes the rows of its state, then says they are whole.
        deadline = time.monotonic() + 10
        while not _whole(influx) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    assert _whole(influx)
    # Ingest stores newer readings since, and a late one older than a row.
    settings = ingest_settings(servers, influx, topic_root)
    telemetry = TopicLayout(topic_root).telemetry
    publish_and_wait(
        servers,
        settings,
        [
            (telemetry("streetlight", LAMPS[0]), lamp(now - 60 * S, 11.0)),
            (telemetry("streetlight", LAMPS[2]), lamp(now - 30 * S, 33.0)),
            (telemetry("streetlight", LAMPS[1]), lamp(now - 9000 * S, 0.5)),
        ],
    )
    # A new replica, its data folder empty, no peer: from the rows, with all of it.
    started, state = await _state(_api(servers, influx, tmp_path, "b"))
    assert started == "rows"
    expected = {
        LAMPS[0]: _reading(now - 60 * S, 11.0),
        LAMPS[1]: _reading(now - 7200 * S, 2.0),
        LAMPS[2]: _reading(now - 30 * S, 33.0),
    }
    assert state == expected


async def test_a_start_reads_only_the_full_load_the_point_names(
    servers: LocalServers,
    influx: InfluxConfig,
    tmp_path: Path,
    now: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Replicas and their redeployments (each full load its own rows) add no writer's worth of
    rows to every later start's read; a full load over rows already whole writes none (they
    hold every reading already)."""
    _store(influx, [_light(LAMPS[0], now - 120 * S, 1.0)])
    loads: list[str] = []
    for name, power in (("a", 2.0), ("b", 3.0)):
        _store(influx, [_light(LAMPS[1], now - 60 * S, power)])
        with InfluxClient(influx) as client:
            withdraw_rows_whole(client)  # an import: the next full load makes the rows whole
        app = create_app(_api(servers, influx, tmp_path, name))
        async with running(app):
            assert app.state.runtime.live.started_from == "influxdb"
            await _until_whole(influx)
        loads.append(_named(influx))
        assert kept(influx)[NAMED] == {
            LAMPS[0]: (now - 120 * S, 1.0),
            LAMPS[1]: (now - 60 * S, power),
        }
    assert set(kept(influx)) == {NAMED, loads[0]}  # a's rows stay (dropped after a day) ...
    caplog.set_level(logging.INFO, logger="api.live.service")
    started, state = await _state(_api(servers, influx, tmp_path, "c"))
    assert started == "rows"
    assert "(2 rows)" in caplog.text  # ... and are not read
    assert state == {LAMPS[0]: _reading(now - 120 * S, 1.0), LAMPS[1]: _reading(now - 60 * S, 3.0)}
    # Whole: a replica that reads the readings regardless writes no rows of its own.
    settings = _api(servers, influx, tmp_path, "d").model_copy(
        update={"api_state_from_rows": False}
    )
    app = create_app(settings)
    async with running(app):
        assert app.state.runtime.live.started_from == "influxdb"
        assert not app.state.runtime.live.rows_due


async def test_a_city_stored_from_an_empty_database_on_starts_the_api_from_the_rows(
    servers: LocalServers, topic_root: str, tmp_path: Path, now: int
) -> None:
    """Set up empty, the database says its rows are whole: every writer keeps rows from its first
    batch, so the API's very first start reads the rows, not the newest point of every series."""
    influx = _set_up_empty(servers)
    with InfluxClient(influx) as client:
        # Said once: set up again (every ingest start does), it is already there.
        assert not ensure_schema(client, Retention(readings="INF"), load_profiles()).rows_whole
    assert _whole(influx)
    telemetry = TopicLayout(topic_root).telemetry
    publish_and_wait(
        servers,
        ingest_settings(servers, influx, topic_root),
        [
            (telemetry("streetlight", LAMPS[0]), lamp(now - 60 * S, 11.0)),
            (telemetry("streetlight", LAMPS[0]), lamp(now - 90 * S, 9.0)),  # late: not the row
            (telemetry("streetlight", LAMPS[2]), lamp(now - 30 * S, 33.0)),
        ],
    )
    started, state = await _state(_api(servers, influx, tmp_path, "a"))
    assert started == "rows"
    assert state == {LAMPS[0]: _reading(now - 60 * S, 11.0), LAMPS[2]: _reading(now - 30 * S, 33.0)}


def _set_up_empty(servers: LocalServers) -> InfluxConfig:
    """A new database set up empty: its rows whole from the start (common.schema)."""
    influx = InfluxConfig(url=servers.influxdb.url, database=f"t_{secrets.token_hex(6)}")
    with InfluxClient(influx) as client:
        assert ensure_schema(client, Retention(readings="INF"), load_profiles()).rows_whole
    return influx


# A lamp's two messages of one time (its state, required, in both): one point of both.
BOTH = {"powerState": "on", "temperature": 21.5, "powerConsumption": 7.5}


async def test_a_start_from_the_rows_has_only_the_newest_reading_s_fields(
    servers: LocalServers, topic_root: str, tmp_path: Path, now: int
) -> None:
    """A lamp reports its temperature, then a reading without it (most fields are optional):
    InfluxDB keeps the older temperature in the row written over it, and a start from the rows
    must not take it for the newer reading's."""
    influx = _set_up_empty(servers)
    topic = TopicLayout(topic_root).telemetry("streetlight", LAMPS[0])
    warm = {"ts": (now - 60 * S) // 1_000_000, "powerState": "on", "temperature": 21.5}
    later = {"ts": now // 1_000_000, "powerState": "off"}
    publish_and_wait(
        servers,
        ingest_settings(servers, influx, topic_root),
        [(topic, orjson.dumps(warm))],
        [(topic, orjson.dumps(later))],
    )
    [row] = rows(influx, f'SELECT * FROM "{LATEST}"."{layout.MEASUREMENT}"')
    temperature = layout.key_of("streetlight", "temperature", "number")
    assert (row["at"], row[temperature]) == (now, 21.5)  # written over, the older field kept
    started, state = await _state(_api(servers, influx, tmp_path, "a"))
    assert started == "rows"
    assert state == {LAMPS[0]: {"time": rfc3339(now), "values": {"powerState": "off"}}}


async def test_a_start_from_the_rows_merges_two_workers_rows_of_one_point(
    servers: LocalServers, topic_root: str, tmp_path: Path, now: int
) -> None:
    """A lamp sends its temperature and its power in two messages of one timestamp (its state,
    required, in both), and two workers take one each (as a shared subscription deals them):
    InfluxDB holds one point of both, each worker a row of one. A start from the rows serves
    the whole point."""
    influx = _set_up_empty(servers)
    topic = TopicLayout(topic_root).telemetry("streetlight", LAMPS[0])
    on = {"ts": now // 1_000_000, "powerState": "on"}
    first = ingest_settings(servers, influx, topic_root, client_id=f"a-{topic_root[-8:]}")
    publish_and_wait(servers, first, [(topic, orjson.dumps({**on, "temperature": 21.5}))])
    second = first.model_copy(update={"client_id": f"b-{topic_root[-8:]}"})
    publish_and_wait(servers, second, [(topic, orjson.dumps({**on, "powerConsumption": 7.5}))])
    [point] = rows(influx, f"SELECT * FROM \"streetlight\" WHERE device_id = '{LAMPS[0]}'")
    assert (point["temperature"], point["powerConsumption"]) == (21.5, 7.5)
    assert len(rows(influx, f'SELECT * FROM "{LATEST}"."{layout.MEASUREMENT}"')) == 2
    started, state = await _state(_api(servers, influx, tmp_path, "a"))
    assert started == "rows"
    assert state == {LAMPS[0]: {"time": rfc3339(now), "values": BOTH}}


async def test_a_start_from_the_rows_merges_messages_of_one_time_either_side_of_a_restart(
    servers: LocalServers, topic_root: str, tmp_path: Path, now: int
) -> None:
    """A lamp's two messages of one timestamp, its worker started again between them (the
    broker held the second over the restart): the worker reads its row's mask back at start
    and writes the row again with both messages' fields, as InfluxDB merged the point."""
    influx = _set_up_empty(servers)
    topic = TopicLayout(topic_root).telemetry("streetlight", LAMPS[0])
    on = {"ts": now // 1_000_000, "powerState": "on"}
    settings = ingest_settings(servers, influx, topic_root)
    publish_and_wait(servers, settings, [(topic, orjson.dumps({**on, "temperature": 21.5}))])
    publish_and_wait(servers, settings, [(topic, orjson.dumps({**on, "powerConsumption": 7.5}))])
    [row] = rows(influx, f'SELECT * FROM "{LATEST}"."{layout.MEASUREMENT}"')
    assert row[POWER] == 7.5  # written again after the restart
    started, state = await _state(_api(servers, influx, tmp_path, "a"))
    assert started == "rows"
    assert state == {LAMPS[0]: {"time": rfc3339(now), "values": BOTH}}


def test_a_database_holding_readings_is_not_said_whole_by_its_set_up(
    servers: LocalServers, influx: InfluxConfig, now: int
) -> None:
    """An older version's database (readings, no `latest` policy) set up by this one, and one
    whose readings were imported by other means: the rows are left for a full load to make
    whole."""
    _store(influx, [_light(LAMPS[0], now - 60 * S, 1.0)])
    with InfluxClient(influx) as client:
        client.query(f'DROP RETENTION POLICY "{LATEST}" ON "{influx.database}"')
        report = ensure_schema(client, Retention(readings="INF"), load_profiles())
        assert LATEST in report.created
        assert not report.rows_whole and not _whole(influx)
    empty = InfluxConfig(url=servers.influxdb.url, database=f"t_{secrets.token_hex(6)}")
    with InfluxClient(empty) as client:
        assert ensure_schema(client, Retention(readings="INF"), load_profiles()).rows_whole
        _store(empty, [_light(LAMPS[0], now - 60 * S, 1.0)])  # imported
        withdraw_rows_whole(client)  # as `citysense schema --readings-imported --skip-rows`
        assert not _whole(empty)
        assert not ensure_schema(client, Retention(readings="INF"), load_profiles()).rows_whole
    assert not _whole(empty)


def _schema_env(monkeypatch: pytest.MonkeyPatch, servers: LocalServers, database: str) -> None:
    """`citysense schema` on this database, with the registry the tests' APIs use."""
    monkeypatch.setenv("CITYSENSE_INFLUX_URL", servers.influxdb.url)
    monkeypatch.setenv("CITYSENSE_INFLUX_DB", database)
    influx = InfluxConfig(url=servers.influxdb.url, database=database)
    monkeypatch.setenv("CITYSENSE_REGISTRY", str(ingest_settings(servers, influx, "x").registry))


def test_citysense_schema_says_whether_the_rows_are_whole(
    servers: LocalServers,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    now: int,
) -> None:
    database = f"t_{secrets.token_hex(6)}"
    _schema_env(monkeypatch, servers, database)
    assert cli.main(["schema", "--no-users"]) == 0
    assert "latest rows: whole (no readings yet" in capsys.readouterr().out
    influx = InfluxConfig(url=servers.influxdb.url, database=database)
    assert _whole(influx)
    _store(influx, [_light(LAMPS[0], now - 60 * S, 1.0)])  # an import
    assert cli.main(["schema", "--no-users", "--readings-imported", "--skip-rows"]) == 0
    assert "latest rows: not built here (--skip-rows)" in capsys.readouterr().out
    assert not _whole(influx)
    assert not kept(influx)


async def test_the_set_up_builds_the_rows_of_readings_no_writer_kept_rows_of(
    servers: LocalServers,
    influx: InfluxConfig,
    tmp_path: Path,
    now: int,
    *,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A database of a version before the rows (readings, nothing said whole), set up by this
    one: the set-up builds the rows once, and an API's first start reads them, not the
    readings. An import after it, said so, is built again."""
    _store(
        influx,
        [
            _light(LAMPS[0], now - 7200 * S, 1.0),
            _light(LAMPS[1], now - 120 * S, 3.0),
            _light(LAMPS[1], now - 60 * S, 2.0),
        ],
    )
    _schema_env(monkeypatch, servers, influx.database)

    def schema(*flags: str) -> str:
        assert cli.main(["schema", "--no-users", *flags]) == 0
        return capsys.readouterr().out

    said = await asyncio.to_thread(schema)
    assert "latest rows: built from the newest readings of 2 devices in" in said
    assert said.rstrip().endswith(": whole")
    expected = {LAMPS[0]: (now - 7200 * S, 1.0), LAMPS[1]: (now - 60 * S, 2.0)}
    assert kept(influx) == {NAMED: expected}
    started, state = await _state(_api(servers, influx, tmp_path, "a"))
    assert started == "rows"
    assert state == {LAMPS[0]: _reading(now - 7200 * S, 1.0), LAMPS[1]: _reading(now - 60 * S, 2.0)}
    # Run again (every deploy runs it): whole, nothing read.
    assert "latest rows: whole\n" in await asyncio.to_thread(schema)
    # Readings imported, and said so: built again (a full load's rows of its own, now named).
    _store(influx, [_light(LAMPS[2], now - 30 * S, 4.0), _light(LAMPS[0], now - 10 * S, 5.0)])
    said = await asyncio.to_thread(schema, "--readings-imported")
    assert "latest rows: built from the newest readings of 3 devices in" in said
    expected.update({LAMPS[2]: (now - 30 * S, 4.0), LAMPS[0]: (now - 10 * S, 5.0)})
    assert kept(influx)[NAMED] == expected
    started, state = await _state(_api(servers, influx, tmp_path, "b"))
    assert started == "rows"
    assert state == {
        LAMPS[0]: _reading(now - 10 * S, 5.0),
        LAMPS[1]: _reading(now - 60 * S, 2.0),
        LAMPS[2]: _reading(now - 30 * S, 4.0),
    }


async def test_rows_are_not_used_before_a_full_load_made_them_whole(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, tmp_path: Path, now: int
) -> None:
    _store(influx, [_light(LAMPS[0], now - 7200 * S, 1.0)])  # no row: stored by another writer
    publish_and_wait(
        servers,
        ingest_settings(servers, influx, topic_root),
        [(TopicLayout(topic_root).telemetry("streetlight", LAMPS[1]), lamp(now - 60 * S, 2.0))],
    )
    assert not _whole(influx)
    started, state = await _state(_api(servers, influx, tmp_path, "a"))
    assert started == "influxdb"
    assert state == {LAMPS[0]: _reading(now - 7200 * S, 1.0), LAMPS[1]: _reading(now - 60 * S, 2.0)}


def _owed(influx: InfluxConfig) -> list[str]:
    """The writers of the owed marks (wire.latest), oldest first."""
    return [str(r["writer"]) for r in rows(influx, f"SELECT * FROM {qualified(layout.OWED)}")]


def _whole_now(influx: InfluxConfig) -> bool:
    """The point says whole and records the newest owed mark (none for none): api.live.rows."""
    points = rows(influx, f'SELECT * FROM "{LATEST}"."{layout.COMPLETE}"')
    newest = rows(influx, f"SELECT * FROM {qualified(layout.OWED)} ORDER BY time DESC LIMIT 1")
    return bool(points) and layout.recorded_stamp(points[0]) == layout.newest_stamp(newest)


async def _until_whole(influx: InfluxConfig) -> None:
    await until(lambda: _whole_now(influx), 10, "the rows to be said whole", interval=0.1)


async def test_readings_a_worker_stored_without_rows_after_they_were_said_whole_are_not_missed(
    servers: LocalServers,
    influx: InfluxConfig,
    topic_root: str,
    tmp_path: Path,
    *,
    now: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The window after the `latest` policy comes back: a worker keeps its rows off until it
    looks again (RECHECK_S), an API's full load meanwhile says the rows whole, and the worker
    stores a newer reading without its row. Its owed mark makes the next start read the
    readings, not the stale row."""
    monkeypatch.setattr(latest_module, "RECHECK_S", 3600.0)  # the worker does not look again
    settings = ingest_settings(servers, influx, topic_root)
    one = TopicLayout(topic_root).telemetry("streetlight", LAMPS[0])
    simulator = servers.mosquitto.url("citysense-simulator")
    writes = WritesSeen()
    with InfluxClient(influx) as client, running_worker(settings, writes) as worker:
        publish(simulator, [(one, lamp(now - 90 * S, 1.0))])
        wait_for(lambda: worker.stats.messages_acked >= 1, 20, what="the first ack")
        client.query(f'DROP RETENTION POLICY "{LATEST}" ON "{influx.database}"')
        publish(simulator, [(one, lamp(now - 60 * S, 2.0))])
        wait_for(lambda: worker.stats.messages_acked >= 2, 20, what="stored without rows")
        assert _owed(influx) == [IMPORT, settings.client_id]  # the database's seed, then the worker
        assert worker.stats.snapshot()["latest_rows_owed"] == 1
        ensure_schema(client, settings.retention, load_profiles())  # `citysense schema`
        assert not worker.latest.enabled
        first = create_app(_api(servers, influx, tmp_path, "a"))
        async with running(first):
            assert first.state.runtime.live.started_from == "influxdb"
            await _until_whole(influx)  # the rows of its state, the reading at -60 s in them
        writes.heads.clear()
        publish(simulator, [(one, lamp(now - 30 * S, 3.0))])
        wait_for(lambda: worker.stats.messages_acked >= 3, 20, what="stored without rows again")
    assert _owed(influx) == [IMPORT] + [settings.client_id] * 2
    # The keeper off, the mark goes with the readings, before their change marks: an API that
    # read the marks finds it.
    assert writes.heads == ["streetlight", layout.OWED, "citysense_changes"]
    second = create_app(_api(servers, influx, tmp_path, "b"))
    async with running(second):
        assert second.state.runtime.live.started_from == "influxdb"  # not the stale row at -60 s
        await _until_whole(influx)  # its rows, and the point with the newest owed mark's stamp
    # Whole again: the next replica starts from the rows, with the newest reading.
    started, state = await _state(_api(servers, influx, tmp_path, "c"))
    assert started == "rows"
    assert state == {LAMPS[0]: _reading(now - 30 * S, 3.0)}


class WritesSeen(httpx.BaseTransport):
    """The real InfluxDB; the measurement each write request begins with, in order."""

    def __init__(self) -> None:
        self._real = httpx.HTTPTransport()
        self.heads: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/write":
            self.heads.append(measurement_of(request.read().decode()))
        return self._real.handle_request(request)


class OwedDuringTheLoad(httpx.AsyncBaseTransport):
    """The real InfluxDB, where a writer stores readings without rows (its owed mark) just
    before the API's first write of latest rows: after the full load read the readings."""

    def __init__(self, influx: InfluxConfig, *, imported: bool = False) -> None:
        self._real = httpx.AsyncHTTPTransport()
        self._influx = influx
        self._imported = imported  # readings imported and said so, rather than a writer's mark
        self.owed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = request.content
        if not self.owed and request.url.path == "/write" and body.startswith(b"citysense_latest,"):
            self.owed = True
            with InfluxClient(self._influx) as client:
                if self._imported:
                    withdraw_rows_whole(client)  # `citysense schema --readings-imported`
                else:
                    client.write(layout.owed_line("worker-x").encode(), policy=CHANGES)
        return await self._real.handle_async_request(request)


@pytest.mark.parametrize("imported", [False, True], ids=["a writer's mark", "an import"])
async def test_a_full_load_says_nothing_whole_if_readings_went_without_rows_meanwhile(
    servers: LocalServers,
    influx: InfluxConfig,
    tmp_path: Path,
    now: int,
    *,
    caplog: pytest.LogCaptureFixture,
    imported: bool,
) -> None:
    _store(influx, [_light(LAMPS[0], now - 60 * S, 1.0)])
    transport = OwedDuringTheLoad(influx, imported=imported)
    app = create_app(_api(servers, influx, tmp_path, "a"), influx_transport=transport)
    async with running(app):
        await until(lambda: "latest rows not whole" in caplog.text, 10, "the rows to be written")
    assert transport.owed
    assert rows(influx, f'SELECT * FROM "{LATEST}"."{layout.MEASUREMENT}"')  # rows written
    assert not _whole(influx)  # ... but not said whole


async def test_rows_given_up_on_for_one_load_leave_a_later_load_s_rows_due(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path
) -> None:
    """The periodic full reload came while the rows of the load before were still being sent,
    and a writer stored readings without rows in between: the earlier rows are not said whole
    (the owed mark moved), and that gives up on them alone. The later load, which read the
    moved mark, still has its rows due, written at the next round; both used to be cleared, and
    the rows stayed not whole, every start without a snapshot a full load, until the next full
    reload (6 hours by default)."""
    settings = _api(servers, influx, tmp_path, "a")
    client = AsyncInfluxClient(settings.influx)
    live = Live(settings, Contract.build(*settings.load_contract()), client, str)
    try:
        owed = await rows_module.newest_owed(client, 10)  # the import's (tests.support.influx)
        live._rows_due = owed  # the later load's, which read the newest mark
        assert not await live._vouch(live._full_load_rows(), "the earlier load's", None)
        assert live.rows_due
        assert not _whole(influx)
        # The earlier load's own rows given up on: due no more.
        live._rows_due = "the earlier load's"
        assert not await live._vouch(live._full_load_rows(), "the earlier load's", None)
        assert not live.rows_due
        # The later load's, at the next round: whole.
        live._rows_due = owed
        assert await live._vouch(live._full_load_rows(), owed, None)
        assert not live.rows_due
        assert _whole_now(influx)
    finally:
        await client.aclose()


def _store_three_lamps(influx: InfluxConfig, now: int) -> None:
    """The three lamps' readings of two hours ago, by a writer keeping no rows (_store)."""
    _store(influx, [_light(d, now - 7200 * S, n + 1.0) for n, d in enumerate(LAMPS)])


def _first_lamp_newer(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, now: int
) -> IngestSettings:
    """A worker stores a reading of the first lamp at `now`, with its row; its settings."""
    ingest = ingest_settings(servers, influx, topic_root)
    topic = TopicLayout(topic_root).telemetry("streetlight", LAMPS[0])
    publish_and_wait(servers, ingest, [(topic, lamp(now, 11.0))])
    return ingest


def _silent_two(now: int) -> dict[str, tuple[int, float]]:
    """The rows of the two lamps no worker holds a row of after _first_lamp_newer."""
    return {LAMPS[1]: (now - 7200 * S, 2.0), LAMPS[2]: (now - 7200 * S, 3.0)}


def _every_newest(now: int) -> dict[str, dict[str, object]]:
    """Every lamp's newest reading after _store_three_lamps and _first_lamp_newer."""
    return {
        LAMPS[0]: _reading(now, 11.0),
        LAMPS[1]: _reading(now - 7200 * S, 2.0),
        LAMPS[2]: _reading(now - 7200 * S, 3.0),
    }


async def test_a_full_load_s_rows_are_compacted_to_the_devices_no_worker_holds(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, tmp_path: Path, now: int
) -> None:
    """An upgraded city: the set-up's build wrote a row of every device, then a worker keeps
    rows of the devices that report. A running API writes the build's rows again for only the
    device no worker holds a row as new for, names them, and drops a full load's rows no point
    names that are over a day old; a start then reads a row per device and worker."""
    _store_three_lamps(influx, now)
    settings = _api(servers, influx, tmp_path, "a").model_copy(
        update={"api_rows_compact_after": 0.1, "api_status_check_interval": 0.1}
    )
    built = await _build(settings, AsyncInfluxClient(influx))
    assert built.whole
    built_by = _named(influx)
    # Rows of a full load that never named them, two days ago (a replica that died).
    stale = f"{layout.FULL_LOAD}{now // S - 2 * 86400}-deadbeef"
    keys = layout.encoded_keys("streetlight", {"powerConsumption": "number"})
    row, _ = layout.row_line(
        layout.row_series("streetlight", stale, "00"),
        LAMPS[0],
        time_ns=now - 9000 * S,
        keys=keys,
        fields={"powerConsumption": 0.5},
        slot=1,
    )
    with InfluxClient(influx) as writer:
        writer.write(row.encode(), policy=LATEST)
    # A worker stores a newer reading of one lamp and the same reading of another again.
    ingest = ingest_settings(servers, influx, topic_root)
    telemetry = TopicLayout(topic_root).telemetry
    publish_and_wait(
        servers,
        ingest,
        [
            (telemetry("streetlight", LAMPS[0]), lamp(now - 60 * S, 11.0)),
            (telemetry("streetlight", LAMPS[1]), lamp(now - 7200 * S, 2.0)),
        ],
    )
    app = create_app(settings)
    async with running(app):
        assert app.state.runtime.live.started_from == "rows"
        # The point names the new rows first; the stale ones are dropped right after.
        await until(lambda: stale not in kept(influx), 10, "the stale rows to be dropped")
    found = kept(influx)
    assert found[NAMED] == {LAMPS[2]: (now - 7200 * S, 3.0)}
    assert found[ingest.client_id] == {
        LAMPS[0]: (now - 60 * S, 11.0),
        LAMPS[1]: (now - 7200 * S, 2.0),
    }
    assert set(found) == {NAMED, ingest.client_id, built_by}  # the stale rows dropped
    started, state = await _state(_api(servers, influx, tmp_path, "b"))
    assert started == "rows"
    assert state == {
        LAMPS[0]: _reading(now - 60 * S, 11.0),
        LAMPS[1]: _reading(now - 7200 * S, 2.0),
        LAMPS[2]: _reading(now - 7200 * S, 3.0),
    }


async def test_a_compaction_cut_short_before_its_point_leaves_the_rows_whole_as_they_were(
    servers: LocalServers,
    influx: InfluxConfig,
    topic_root: str,
    *,
    tmp_path: Path,
    now: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """InfluxDB failing (or the API stopped) after a compaction's rows and before its point:
    the point still names the build's rows, the compaction's are read by no start (and are
    dropped a day later), and the next start has every newest reading."""
    _store_three_lamps(influx, now)
    settings = _api(servers, influx, tmp_path, "a").model_copy(
        update={"api_rows_compact_after": 0.1}
    )
    built = await _build(settings, AsyncInfluxClient(influx))
    assert built.whole
    built_by = _named(influx)
    ingest = _first_lamp_newer(servers, influx, topic_root, now)
    _refuse_the_complete_point(monkeypatch)
    caplog.set_level(logging.INFO, logger="api.live.service")
    async with running(create_app(settings)):
        await until(
            lambda: "could not compact the latest rows" in caplog.text, 10, "the compaction"
        )
    monkeypatch.undo()
    found = kept(influx)
    [compacted] = set(found) - {NAMED, ingest.client_id}
    assert layout.full_load_began(compacted) is not None
    assert found[compacted] == _silent_two(now)
    assert _named(influx) == built_by
    assert _whole_now(influx)
    caplog.clear()
    started, state = await _state(_api(servers, influx, tmp_path, "b"))
    assert started == "rows"
    assert "(4 rows)" in caplog.text  # the build's three and the worker's one: not the compaction's
    assert state == _every_newest(now)


class HeldPoints:
    """Every point saying the rows whole held back until `count` of them are waiting: each
    writer checked the rows before any point was written (the order no lock prevents)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.held = 0
        self._all = asyncio.Event()

    async def hold(self) -> None:
        self.held += 1
        if self.held >= self.count:
            self._all.set()
        await asyncio.wait_for(self._all.wait(), 10)


def _hold_the_complete_points(monkeypatch: pytest.MonkeyPatch, count: int) -> HeldPoints:
    real = AsyncInfluxClient.write
    held = HeldPoints(count)

    async def write(self: AsyncInfluxClient, body: bytes, **kwargs: Any) -> None:
        if body.startswith(layout.COMPLETE.encode()):
            await held.hold()
        await real(self, body, **kwargs)

    monkeypatch.setattr(AsyncInfluxClient, "write", write)
    return held


async def test_two_replicas_compacting_at_once_leave_the_rows_whole(
    servers: LocalServers,
    influx: InfluxConfig,
    topic_root: str,
    *,
    tmp_path: Path,
    now: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two replicas compacting the build's rows at once (an upgrade starts them together),
    both past the check that the point still names the build's rows before either writes its
    own point: each one's rows hold every device no worker holds a row as new for, so the
    newer point names whole rows whichever it is, and a start after has every newest reading."""
    _store_three_lamps(influx, now)
    settings = [
        _api(servers, influx, tmp_path, name).model_copy(update={"api_rows_compact_after": 0})
        for name in ("a", "b")
    ]
    built = await _build(settings[0], AsyncInfluxClient(influx))
    assert built.whole
    built_by = _named(influx)
    ingest = _first_lamp_newer(servers, influx, topic_root, now)
    held = _hold_the_complete_points(monkeypatch, 2)
    first, second = create_app(settings[0]), create_app(settings[1])
    async with running(first), running(second):
        done = await asyncio.gather(
            first.state.runtime.live.compact_rows(), second.state.runtime.live.compact_rows()
        )
    monkeypatch.undo()
    assert (done, held.held) == ([2, 2], 2)
    found = kept(influx)
    [other] = set(found) - {NAMED, ingest.client_id, built_by}
    assert _named(influx) not in (built_by, other)
    assert found[NAMED] == found[other] == _silent_two(now)
    assert _whole_now(influx)
    caplog.set_level(logging.INFO, logger="api.live.service")
    started, state = await _state(_api(servers, influx, tmp_path, "c"))
    assert started == "rows"
    assert "(3 rows)" in caplog.text  # the named compaction's two and the worker's one
    assert state == _every_newest(now)


class CompactedWhileRead(httpx.AsyncBaseTransport):
    """The real InfluxDB, where another replica compacts the rows (`compact`) after this client
    asked for the rows and before InfluxDB answers any of its reads of them: it names rows of
    its own, then drops those it replaced."""

    def __init__(self, compact: Callable[[], Coroutine[object, object, int | None]]) -> None:
        self._real = httpx.AsyncHTTPTransport()
        self._compact = compact
        self._compaction: asyncio.Task[int | None] | None = None
        self.read = 0

    @property
    def compacted(self) -> int | None:
        return self._compaction.result() if self._compaction else None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        query = parse_qs(request.content.decode()).get("q", [""])[0]
        if "$full_loads" in query:  # a read of every writer's rows and the named full load's
            self.read += 1
            if self._compaction is None:
                self._compaction = asyncio.create_task(self._compact())
            await self._compaction
        return await self._real.handle_async_request(request)


async def test_a_start_from_rows_another_replica_compacts_meanwhile_reads_the_new_rows(
    servers: LocalServers,
    influx: InfluxConfig,
    topic_root: str,
    *,
    tmp_path: Path,
    now: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rolling upgrade after the set-up's first day: a replica compacts the build's rows (names
    its own, then drops the build's, begun over a day ago) while another starts from them. The
    start reads again the rows the point names once it finds them renamed: every device."""
    _store_three_lamps(influx, now)
    settings = [
        _api(servers, influx, tmp_path, name).model_copy(update={"api_rows_compact_after": 0})
        for name in ("a", "b")
    ]
    two_days_ago = f"{layout.FULL_LOAD}{now // S - 2 * 86400}-cafef00d"
    monkeypatch.setattr(layout, "full_load_tag", lambda _now: two_days_ago)
    monkeypatch.setattr(rows_module, "GEN_MAX_AGE_S", 3 * 86400)  # said whole then
    assert (await _build(settings[0], AsyncInfluxClient(influx))).whole
    monkeypatch.undo()
    assert _named(influx) == two_days_ago
    _first_lamp_newer(servers, influx, topic_root, now)
    other = create_app(settings[0])
    async with running(other):
        transport = CompactedWhileRead(other.state.runtime.live.compact_rows)
        client = AsyncInfluxClient(influx, transport=transport)
        try:
            contract = Contract.build(*settings[1].load_contract())
            live = Live(
                settings[1].model_copy(update={"api_data_dir": None}), contract, client, str
            )
            await live.reload(from_rows=True)
        finally:
            await client.aclose()
    assert transport.compacted == 2  # the build's three rows replaced by two
    assert two_days_ago not in kept(influx)  # and dropped
    assert live.started_from == "rows"
    assert transport.read > len(rows_module.PIECES)  # read again
    times = live.state.times()
    assert [times[live.state.index[d]] for d in LAMPS] == [now, now - 7200 * S, now - 7200 * S]


async def test_the_set_up_says_nothing_whole_if_readings_went_without_rows_meanwhile(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, now: int
) -> None:
    _store(influx, [_light(LAMPS[0], now - 60 * S, 1.0)])
    transport = OwedDuringTheLoad(influx)
    settings = _api(servers, influx, tmp_path, "a")
    built = await _build(settings, AsyncInfluxClient(influx, transport=transport))
    assert transport.owed
    assert (built.needed, built.devices, built.whole) == (True, 1, False)
    [(writer, written)] = kept(influx).items()  # rows written ...
    assert layout.full_load_began(writer) is not None
    assert written == {LAMPS[0]: (now - 60 * S, 1.0)}
    assert not _whole(influx)  # ... but not said whole
    started, _ = await _state(settings)
    assert started == "influxdb"


async def test_devices_sharing_a_slot_are_read_from_their_readings(
    servers: LocalServers,
    influx: InfluxConfig,
    tmp_path: Path,
    now: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two lamps whose ids hash to the same slot: the second's row overwrote the first's.
    shared = ("00", 42)  # bucket and slot of the place 42

    def place_of(device_id: str) -> int:
        return 42 if device_id in LAMPS[:2] else real(device_id)

    real = layout.place_of
    monkeypatch.setattr(layout, "place_of", place_of)
    _store(influx, [_light(LAMPS[0], now - 120 * S, 1.0), _light(LAMPS[1], now - 60 * S, 2.0)])
    keys = layout.encoded_keys("streetlight", {"powerState": "state", "powerConsumption": "number"})
    lines = [
        layout.row_line(
            layout.row_series("streetlight", "elsewhere", shared[0]),
            device,
            time_ns=at,
            keys=keys,
            fields={"powerState": "on", "powerConsumption": power},
            slot=shared[1],
        )[0]
        for device, at, power in ((LAMPS[0], now - 120 * S, 1.0), (LAMPS[1], now - 60 * S, 2.0))
    ]
    with InfluxClient(influx) as client:
        newest = rows(influx, f"SELECT * FROM {qualified(layout.OWED)} ORDER BY time DESC LIMIT 1")
        whole = layout.complete_line("elsewhere", now, layout.newest_stamp(newest))
        client.write("\n".join([*lines, whole]).encode(), policy=LATEST)
    assert set(kept(influx)["elsewhere"]) == {LAMPS[1]}  # one row left in the slot
    started, state = await _state(_api(servers, influx, tmp_path, "a"))
    assert started == "rows"
    assert state == {LAMPS[0]: _reading(now - 120 * S, 1.0), LAMPS[1]: _reading(now - 60 * S, 2.0)}


async def _snapshot_of_two_lamps(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, now: int
) -> ApiSettings:
    """Two lamps' readings two hours old, and an API run over them until the rows are whole:
    its settings, whose data folder now holds its snapshot."""
    _store(influx, [_light(LAMPS[0], now - 7200 * S, 1.0), _light(LAMPS[1], now - 7200 * S, 2.0)])
    settings = _api(servers, influx, tmp_path, "a")
    async with running(create_app(settings)):
        await _until_whole(influx)
    return settings


def _late(now: int) -> list[Point]:
    """Written after _snapshot_of_two_lamps: a newer reading of the first, one of the third."""
    return [_light(LAMPS[0], now - 60 * S, 11.0), _light(LAMPS[2], now - 30 * S, 33.0)]


async def _restarted(settings: ApiSettings, now: int) -> tuple[str | None, str, int]:
    """A restart after _late's readings: how it started and caught up (the live service's
    started_from, caught_up_from, parts_queried), once every lamp has its newest reading."""
    app = create_app(settings)
    async with running(app) as client:
        live = app.state.runtime.live
        found = {d: (await client.get(f"/devices/{d}")).json()["reading"] for d in LAMPS}
    assert found == {
        LAMPS[0]: _reading(now - 60 * S, 11.0),
        LAMPS[1]: _reading(now - 7200 * S, 2.0),
        LAMPS[2]: _reading(now - 30 * S, 33.0),
    }
    return live.started_from, live.caught_up_from, live.parts_queried


async def test_a_restart_catches_up_from_the_rows_what_was_written_unannounced(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, now: int
) -> None:
    """Written while the API was down and announced to nobody (as replay and a drained spool
    write: rows, then quiet marks): the restart from the snapshot reads the rows of the moved
    profile, not the moved parts' readings."""
    settings = await _snapshot_of_two_lamps(servers, influx, tmp_path, now)
    profiles, registry = settings.load_contract()
    keeper = LatestRows("replay", profiles, lambda: registry.devices)
    late = _late(now)
    readings = [Enriched(p.measurement, p.device_id, "North", p.time_ns, p.fields) for p in late]
    marks = change_lines({("streetlight", "North", window_of(p.time_ns)) for p in late}, quiet=True)
    with InfluxClient(influx) as client:
        keeper.resume(client)
        client.write(line_protocol(late))
        client.write("\n".join(keeper.rows(readings).lines).encode(), policy=LATEST)
        client.write("\n".join(marks).encode(), policy=CHANGES)
    assert await _restarted(settings, now) == ("snapshot", "latest rows", 0)


async def test_a_restart_from_a_snapshot_reads_the_readings_a_writer_stored_without_rows(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, now: int
) -> None:
    """A stale save: the snapshot is older than readings a writer stored, unannounced, while
    its rows were off (readings, its owed mark, quiet change marks, as ingest's unspooler and
    replay write them then). The restart's catch-up may not take the rows, which lack them."""
    settings = await _snapshot_of_two_lamps(servers, influx, tmp_path, now)
    late = _late(now)
    marks = change_lines({("streetlight", "North", window_of(p.time_ns)) for p in late}, quiet=True)
    with InfluxClient(influx) as client:
        client.write(line_protocol(late))
        client.write(layout.owed_line("worker-x").encode(), policy=CHANGES)
        client.write("\n".join(marks).encode(), policy=CHANGES)
    assert await _restarted(settings, now) == ("snapshot", "readings", 1)


async def test_rows_written_halfway_are_not_whole(
    servers: LocalServers,
    influx: InfluxConfig,
    tmp_path: Path,
    now: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The API stopped, or InfluxDB failing, before the point that says the rows are whole (it
    goes last): the rows it wrote stay, and the next start loads from the readings."""
    _store(influx, [_light(LAMPS[0], now - 7200 * S, 1.0)])
    _refuse_the_complete_point(monkeypatch)
    first = create_app(_api(servers, influx, tmp_path, "a"))
    async with running(first):
        deadline = time.monotonic() + 10
        while not kept(influx) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
    assert LAMPS[0] in next(iter(kept(influx).values()))  # the rows themselves were written
    assert not _whole(influx)
    monkeypatch.undo()
    started, state = await _state(_api(servers, influx, tmp_path, "b"))
    assert started == "influxdb"
    assert state == {LAMPS[0]: _reading(now - 7200 * S, 1.0)}


def test_without_the_latest_policy_readings_flow_and_rows_come_back_with_it(
    servers: LocalServers,
    influx: InfluxConfig,
    topic_root: str,
    *,
    now: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The `latest` policy dropped under a running worker (an older `citysense schema`, a
    restore): the rows are derived data, so the readings are stored and acknowledged without
    them, nothing goes to the spool; once the policy is back the worker keeps rows again."""
    monkeypatch.setattr(latest_module, "RECHECK_S", 0.2)
    settings = ingest_settings(servers, influx, topic_root, spool_dir=tmp_path / "spool")
    one = TopicLayout(topic_root).telemetry("streetlight", LAMPS[0])
    with InfluxClient(influx) as client, running_worker(settings) as worker:
        assert worker.stats.snapshot()["last_stored_timestamp_seconds"] == 0.0
        before = time.time()
        publish(servers.mosquitto.url("citysense-simulator"), [(one, lamp(now - 60 * S, 1.0))])
        wait_for(lambda: worker.stats.messages_acked >= 1, 20, what="the first ack")
        stored_at = worker.stats.snapshot()["last_stored_timestamp_seconds"]
        assert isinstance(stored_at, float) and before < stored_at <= time.time()
        assert kept(influx) == {settings.client_id: {LAMPS[0]: (now - 60 * S, 1.0)}}
        client.query(f'DROP RETENTION POLICY "{LATEST}" ON "{influx.database}"')
        publish(servers.mosquitto.url("citysense-simulator"), [(one, lamp(now - 50 * S, 2.0))])
        wait_for(lambda: worker.stats.messages_acked >= 2, 20, what="acked without rows")
        assert not worker.latest.enabled
        counts = worker.stats.snapshot()
        assert counts["spilled_batches"] == 0
        # Rows off, owed: not rows "refused", whose alert says that is never expected.
        assert counts["latest_rows_refused"] == 0 and counts["latest_rows_owed"] >= 1
        report = ensure_schema(client, settings.retention, load_profiles())  # `citysense schema`
        assert not report.rows_whole and not _whole(influx)  # readings stored without rows
        time.sleep(0.3)  # past RECHECK_S: the next batch looks for the policy again
        publish(servers.mosquitto.url("citysense-simulator"), [(one, lamp(now - 40 * S, 3.0))])
        wait_for(lambda: worker.stats.messages_acked >= 3, 20, what="the third ack")
        assert worker.latest.enabled
    assert kept(influx) == {settings.client_id: {LAMPS[0]: (now - 40 * S, 3.0)}}
    stored = rows(influx, "SELECT powerConsumption FROM streetlight")
    assert sorted(float(str(r["powerConsumption"])) for r in stored) == [1.0, 2.0, 3.0]
