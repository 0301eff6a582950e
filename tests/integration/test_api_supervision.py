"""The API's background work is supervised: a task that dies is logged and counted, /health
answers 503 naming it, and `citysense api` stops serving and exits 1 for its supervisor to
restart it (issue 10: a thread that can die while the process says it is ready)."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

import pytest

from api import cli as api_cli
from api.compute.keeper import RollupKeeper
from api.live.alarms import Writer
from api.main import create_app
from citysense.servers import LocalServers, free_port
from common.influx import InfluxConfig
from tests.support.api import api_settings, running
from tests.support.polling import until

pytestmark = pytest.mark.integration


async def dies(_self: Writer, interval: float = 0.2) -> None:
    raise RuntimeError("injected: the alarm writer dies")


@pytest.mark.anyio
async def test_a_dead_task_turns_health_503_and_calls_for_a_restart(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Writer, "run", dies)
    calls: list[int] = []
    app = create_app(api_settings(servers, influx, tmp_path), on_failure=lambda: calls.append(1))
    async with running(app) as api:
        await until(lambda: calls, 10, "the supervisor to see the task die")
        response = await api.get("/health")
        metrics = (await api.get("/metrics")).text
    assert calls == [1]
    assert response.status_code == 503
    background = response.json()["background"]
    assert background["status"] == "down"
    assert "citysense-alarms" in background["detail"] and "injected" in background["detail"]
    assert "citysense_api_background_crashes 1.0" in metrics


def test_citysense_api_exits_1_when_a_task_dies(
    servers: LocalServers, influx: InfluxConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Writer, "run", dies)
    env = {
        "CITYSENSE_API_AUTH": "off",
        "CITYSENSE_API_PORT": str(free_port()),
        "CITYSENSE_MQTT_URL": servers.mosquitto.url("citysense-api"),
        "CITYSENSE_INFLUX_URL": influx.url,
        "CITYSENSE_INFLUX_DB": influx.database,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = argparse.Namespace(host="127.0.0.1", port=None, log_level="warning")
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        assert api_cli.main(args) == 1  # served, the task died, the server stopped: status 1
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


async def keeper_dies(_self: RollupKeeper) -> int:
    raise RuntimeError("injected: the rollup keeper dies")


@pytest.mark.anyio
async def test_a_dead_rollup_keeper_turns_health_503(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keeper retries what InfluxDB fails; anything else ends it, and the API must not go
    on serving rollups that no longer move as if it were healthy."""
    monkeypatch.setattr(RollupKeeper, "keep_once", keeper_dies)
    calls: list[int] = []
    settings = api_settings(servers, influx, tmp_path, api_rollups_keep=True)
    async with running(create_app(settings, on_failure=lambda: calls.append(1))) as api:
        await until(lambda: calls, 10, "the supervisor to see the keeper die")
        response = await api.get("/health")
    assert response.status_code == 503
    detail = response.json()["background"]["detail"]
    assert "citysense-rollups" in detail and "injected" in detail


@pytest.mark.anyio
async def test_the_feed_s_network_thread_ending_turns_health_503_and_calls_for_a_restart(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
    """paho's network thread ends silently on an exception of its own (ingest looks at its
    own for that reason): the state feed with it, while /health said 200."""
    calls: list[int] = []
    settings = api_settings(servers, influx, tmp_path, topic_root=topic_root)
    app = create_app(settings, on_failure=lambda: calls.append(1))
    async with running(app) as api:
        feed = app.state.runtime.live.feed
        assert feed is not None and feed.running()
        feed._client.loop_stop()  # the thread ends, as on an exception: nothing is said
        await until(lambda: calls, 10, "the supervisor to see the feed's thread gone")
        response = await api.get("/health")
    assert calls == [1]
    assert response.status_code == 503
    assert "MQTT network thread" in response.json()["background"]["detail"]
