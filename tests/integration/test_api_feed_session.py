"""The API's state feed as a kept broker session (api.live.feed, api.live.coverage), on the real
broker and InfluxDB: a restart takes the readings announced while it was down from the broker and
queries InfluxDB for nothing; a write never announced is queried, its part only; a session the
broker no longer holds costs the queries of every moved part, and nothing is missed.

Writes go as ingest makes them: the readings, the change marks (ingest.changes), then the
announcement of both through ingest's own Announcer (numbered, with the marks as stored)."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from pathlib import Path

import orjson
import pytest
from fastapi import FastAPI

from api.core.settings import ApiSettings
from api.live import snapshot as snapshot_module
from api.main import create_app
from citysense.servers import LocalServers
from common.influx import InfluxClient, InfluxConfig
from tests.support.api import api_settings, running
from tests.support.feed import REGISTRY, Ingest, if_found, latest_times, light
from tests.support.influx import make_database
from tests.support.mqtt import publish
from tests.support.polling import until
from tests.support.processes import IngestProcess, ingest_env
from tests.support.seeding import Point, write_registry
from tests.support.times import S, rfc3339
from wire.changes import window_of
from wire.topics import TopicLayout

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def _settings(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, root: str, **extra: object
) -> ApiSettings:
    return api_settings(
        servers,
        influx,
        tmp_path,
        registry=REGISTRY,
        topic_root=root,
        api_data_dir=tmp_path / "data",
        # Which parts a start queries is what these tests look at: not the latest rows, which
        # answer a start's catch-up once a full load made them whole (test_latest_rows.py).
        api_state_from_rows=False,
        **({"api_state_reconcile_interval": 0.3} | extra),
    )


def _live(app: FastAPI) -> object:
    return app.state.runtime.live


async def _trusted_then_stopped(settings: ApiSettings, ingest: Ingest, now: int) -> None:
    """Started, until the feed is trusted (a first start hears running publishers mid-way:
    trust comes with the catch-up after), then stopped: its snapshot written, its session kept."""
    app = create_app(settings)
    async with running(app):
        live = app.state.runtime.live
        await until(live.feed.subscribed.is_set, 10, "the feed's subscription")
        ingest.store([light("SL-1", "North", "on", now - 50 * S)])
        await until(lambda: live.coverage.dump()["publishers"], 10, "the publisher heard")
        await until(lambda: live.coverage.trusted, 10, "a trusted feed")


async def test_a_restart_takes_what_the_broker_kept_and_queries_nothing(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
    now = time.time_ns()
    ingest = Ingest(servers, influx, topic_root)
    ingest.store([light("SL-1", "North", "off", now - 60 * S)])  # before any API
    settings = _settings(servers, influx, tmp_path, topic_root)
    await _trusted_then_stopped(settings, ingest, now)

    # While it is down: every district written, and announced to the kept session.
    ingest.store(
        [
            light("SL-2", "North", "on", now - 30 * S),
            light("SL-3", "East", "on", now - 29 * S),
            Point("water_pipe", "WP-1", "South", {"pressure": 2.5}, now - 28 * S),
        ]
    )
    app = create_app(settings)
    async with running(app) as client:
        live = app.state.runtime.live
        assert live.coverage.trusted
        assert live.parts_queried == 0  # nothing asked of InfluxDB but the marks
        assert await latest_times(client) == {
            "SL-1": rfc3339(now - 50 * S),
            "SL-2": rfc3339(now - 30 * S),
            "SL-3": rfc3339(now - 29 * S),
            "WP-1": rfc3339(now - 28 * S),
        }

    # A write with its mark and no announcement (as replay writes): its part alone is asked.
    ingest.store([light("SL-3", "East", "off", now - 20 * S)], announce=False)
    app = create_app(settings)
    async with running(app) as client:
        live = app.state.runtime.live
        assert live.parts_queried == 1
        assert (await latest_times(client))["SL-3"] == rfc3339(now - 20 * S)


async def test_an_unannounced_write_is_read_though_an_announced_one_took_its_window(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
    """While the API is down, replay stores a device's reading (quiet marks, nothing announced),
    then a worker writes into the same district and quarter and announces it to the kept
    session: the window's stamp is now the announced one, which the feed brings. The restart
    still reads the part (the quiet stamp stays on the mark; no read of ours saw it) and holds
    both readings; before quiet marks it held only the announced one until a full reload."""
    now = time.time_ns()
    ingest = Ingest(servers, influx, topic_root)
    settings = _settings(servers, influx, tmp_path, topic_root, api_state_reconcile_interval=300)
    await _trusted_then_stopped(settings, ingest, now)
    if time.time_ns() % (900 * S) < 3 * S:
        await asyncio.sleep(3)  # both readings below in one quarter, and in the past
    later = time.time_ns()
    assert window_of(later - 2 * S) == window_of(later)
    ingest.store([light("SL-2", "North", "on", later - 2 * S)], announce=False)
    ingest.store([light("SL-1", "North", "off", later - 1 * S)])
    app = create_app(settings)
    async with running(app) as client:
        times = await latest_times(client)
        assert times["SL-1"] == rfc3339(later - 1 * S)
        assert times["SL-2"] == rfc3339(later - 2 * S)
        assert app.state.runtime.live.parts_queried == 1


async def test_a_session_the_broker_dropped_costs_queries_not_readings(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
    now = time.time_ns()
    ingest = Ingest(servers, influx, topic_root)
    settings = _settings(servers, influx, tmp_path, topic_root, api_feed_session_expiry=1)
    await _trusted_then_stopped(settings, ingest, now)
    await asyncio.sleep(2.5)  # the session expires: what follows is announced to nobody
    ingest.store([light("SL-2", "North", "on", now - 30 * S)])
    ingest.store([Point("water_pipe", "WP-1", "South", {"pressure": 2.5}, now - 28 * S)])
    app = create_app(settings)
    async with running(app) as client:
        live = app.state.runtime.live
        times = await latest_times(client)
        assert times["SL-2"] == rfc3339(now - 30 * S)
        assert times["WP-1"] == rfc3339(now - 28 * S)
        assert live.parts_queried >= 2  # every part moved since the snapshot
        await until(lambda: live.coverage.trusted, 10, "trust back after a catch-up")


async def test_a_database_ingest_never_set_up_loads_with_no_marks(
    servers: LocalServers, tmp_path: Path, topic_root: str
) -> None:
    """No policy for the change marks yet (ingest never ran): the state loads, empty, and is
    served; it is not a failure to retry forever."""
    influx = InfluxConfig(url=servers.influxdb.url, database=f"bare_{secrets.token_hex(4)}")
    with InfluxClient(influx) as client:
        client.create_database()
    app = create_app(_settings(servers, influx, tmp_path, topic_root))
    async with running(app) as client:
        response = await client.get("/devices", params={"limit": 100})
        assert response.status_code == 200
        assert all(item["reading"] is None for item in response.json()["items"])


async def test_a_lost_feed_message_is_caught_up_at_once_not_at_the_next_reconcile(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
    """The message after a lost one shows the gap: the catch-up runs within seconds, though the
    reconcile is minutes away, and finds what the lost one announced."""
    now = time.time_ns()
    ingest = Ingest(servers, influx, topic_root)
    settings = _settings(servers, influx, tmp_path, topic_root, api_state_reconcile_interval=300)
    app = create_app(settings)
    async with running(app) as client:
        live = app.state.runtime.live
        await until(live.feed.subscribed.is_set, 10, "the feed's subscription")
        ingest.store([light("SL-1", "North", "on", now - 50 * S)])  # message 0
        await until(lambda: live.coverage.dump()["publishers"], 10, "the publisher heard")
        assert live.coverage.trusted
        ingest.store(
            [Point("water_pipe", "WP-1", "South", {"pressure": 2.5}, now - 40 * S)], lost=True
        )
        ingest.store([light("SL-2", "North", "on", now - 30 * S)])  # message 2: the gap shows
        times = await until(
            lambda: if_found(client, "WP-1"), 10, "the lost message's reading, caught up"
        )
        assert times["WP-1"] == rfc3339(now - 40 * S)
        assert times["SL-2"] == rfc3339(now - 30 * S)


async def test_a_crash_after_taking_the_kept_messages_loses_nothing(
    servers: LocalServers,
    influx: InfluxConfig,
    tmp_path: Path,
    topic_root: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An API that took (and acknowledged) the broker's kept messages and the live ones, then
    died before any snapshot held them: the next start restores the older snapshot, the broker
    has nothing left to give, and every part whose marks moved since that snapshot is queried."""
    now = time.time_ns()
    ingest = Ingest(servers, influx, topic_root)
    settings = _settings(servers, influx, tmp_path, topic_root)
    await _trusted_then_stopped(settings, ingest, now)  # its snapshot holds SL-1 only
    ingest.store([light("SL-2", "North", "on", now - 30 * S)])  # kept by the broker
    ingest.store([Point("water_pipe", "WP-1", "South", {"pressure": 2.5}, now - 28 * S)])
    # From here no snapshot is written, as if the process were killed before its next one.
    monkeypatch.setattr(snapshot_module, "write", lambda *_: True)
    app = create_app(settings)
    async with running(app) as client:
        assert app.state.runtime.live.parts_queried == 0  # all from the broker's session
        ingest.store([light("SL-3", "East", "on", now - 20 * S)])  # live
        await until(lambda: if_found(client, "SL-3"), 10, "the live reading applied")
    monkeypatch.undo()
    want = {
        "SL-1": rfc3339(now - 50 * S),
        "SL-2": rfc3339(now - 30 * S),
        "SL-3": rfc3339(now - 20 * S),
        "WP-1": rfc3339(now - 28 * S),
    }
    app = create_app(settings)
    async with running(app) as client:
        assert await latest_times(client) == want
        assert app.state.runtime.live.parts_queried == 3  # North, East and South moved


async def test_a_worker_killed_leaves_its_will_and_one_stopped_its_final_number(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
    """A real ingest worker: killed, its will reaches the API's feed as a possible loss (what it
    announced last may be lost, and no later number would show it); stopped cleanly, its final
    message is no loss, and the API forgets it."""
    registry = write_registry(tmp_path / "registry.csv")
    settings = api_settings(
        servers, influx, tmp_path, registry=registry, topic_root=topic_root
    ).model_copy(update={"api_state_reconcile_interval": 300.0})
    env = ingest_env(
        servers,
        influx,
        topic_root,
        tmp_path,
        CITYSENSE_REGISTRY=str(registry),
        CITYSENSE_STATE_FEED_WILL_DELAY="0",
    )
    url = servers.mosquitto.url("citysense-simulator")
    telemetry = TopicLayout(topic_root).telemetry("streetlight", "SL-A1")
    app = create_app(settings)
    async with running(app):
        live = app.state.runtime.live
        await until(live.feed.subscribed.is_set, 10, "the feed's subscription")
        for n, ends in enumerate(("killed", "stopped")):
            worker = IngestProcess(env, tmp_path / f"ingest-{n}.log")
            worker.start()
            reading = {"ts": time.time_ns() // 1_000_000, "powerState": "on"}
            publish(url, [(telemetry, orjson.dumps(reading))])
            await until(lambda: live.coverage.dump()["publishers"], 30, "the worker heard")
            await until(lambda: live.coverage.trusted, 10, "a trusted feed")
            losses = live.coverage.losses
            if ends == "killed":
                worker.kill()
                await until(lambda n=losses: live.coverage.losses > n, 10, "its will, a loss")
            else:
                assert worker.terminate() == 0
                await until(lambda: not live.coverage.dump()["publishers"], 10, "it forgotten")
                assert live.coverage.losses == losses and live.coverage.trusted
            assert live.coverage.dump()["publishers"] == []


async def test_a_restart_while_the_city_announces_does_not_wait_for_a_silence(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
    """A worker announcing every 0.1 s (a live city: a few batches a second per worker) never
    leaves the feed silent for long: the start's wait for the broker's kept messages ends once
    they are applied, not at its maximum, and the readings announced meanwhile are held."""
    now = time.time_ns()
    ingest = Ingest(servers, influx, topic_root)
    settings = _settings(servers, influx, tmp_path, topic_root)
    await _trusted_then_stopped(settings, ingest, now)
    for n in range(20):  # kept by the broker while the API is down
        ingest.store([light("SL-2", "North", "on", now - 40 * S + n * S // 100)])
    halt = threading.Event()

    def announce_live() -> None:
        n = 0
        while not halt.wait(0.1):
            n += 1
            ingest.store([light("SL-3", "East", "on", now - 30 * S + n * S // 100)])

    live_city = threading.Thread(target=announce_live, daemon=True)
    live_city.start()
    try:
        app = create_app(settings)
        async with running(app) as client:
            assert app.state.runtime.live.drained_at_start is True
            found = await latest_times(client)
            assert found["SL-2"] == rfc3339(now - 40 * S + 19 * S // 100)
            assert found["SL-3"] is not None
    finally:
        halt.set()
        live_city.join(5)


async def test_a_start_with_the_broker_down_catches_up_once_it_connects(
    private_servers: LocalServers, tmp_path: Path, topic_root: str
) -> None:
    """The broker is down when the API starts: it loads from InfluxDB and serves. A write
    stored meanwhile, announced to no one, is caught up once the broker is back — the first
    connection counts as a loss — not at the next reconcile (minutes away)."""
    stack = private_servers
    influx = make_database(stack)
    now = time.time_ns()
    ingest = Ingest(stack, influx, topic_root)
    ingest.store([light("SL-1", "North", "off", now - 60 * S)], announce=False)
    stack.mosquitto.stop()
    settings = _settings(stack, influx, tmp_path, topic_root, api_state_reconcile_interval=300)
    app = create_app(settings)
    async with running(app) as client:
        live = app.state.runtime.live
        assert not live.feed.subscribed.is_set()
        assert (await latest_times(client))["SL-1"] == rfc3339(now - 60 * S)
        # Stored while the broker is away: its announcement reaches no one.
        ingest.store([light("SL-2", "East", "on", now - 30 * S)], lost=True)
        done = live.caught_up
        stack.mosquitto.start()
        await until(live.feed.subscribed.is_set, 40, "the feed's subscription, broker back")
        times = await until(lambda: if_found(client, "SL-2"), 15, "the unannounced write")
        assert times["SL-2"] == rfc3339(now - 30 * S)
        # The catch-up merges each chunk as it comes: the state may hold SL-2 before the
        # catch-up has returned and counted its parts.
        await until(lambda: live.caught_up > done, 15, "the catch-up's end")
        assert live.parts_queried >= 1
