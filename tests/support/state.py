"""The API's live state against the real servers: settings that judge reporting quickly,
profiles with a short reporting interval, the state feed published as ingest would publish it
(wire.statefeed), and the app started with its live events recorded."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml
from fastapi import FastAPI

from api.core.settings import ApiSettings
from api.live.hub import Event
from api.main import create_app
from citysense.servers import LocalServers
from common.influx import InfluxConfig
from device_profiles import DEFAULT_PROFILES
from tests.support.api import api_settings, running
from tests.support.mqtt import publish, retain
from tests.support.polling import until
from wire import statefeed

# (profile, device id, district, time in ns, values)
Fed = tuple[str, str, str, int, dict[str, Any]]


def fast_profiles(tmp_path: Path, streetlight_interval: str = "2s") -> Path:
    """The shipped profiles with a streetlight reporting interval short enough to watch a device
    go late and silent within a test."""
    folder = tmp_path / "profiles"
    shutil.copytree(DEFAULT_PROFILES, folder)
    path = folder / "streetlight.yaml"
    data = yaml.safe_load(path.read_text())
    data["reporting_interval"] = streetlight_interval
    path.write_text(yaml.safe_dump(data))
    return folder


def live_settings(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str, **extra: Any
) -> ApiSettings:
    """api_settings under `topic_root`, reporting status re-judged every 50 ms."""
    return api_settings(
        servers, influx, tmp_path, topic_root=topic_root, api_status_check_interval=0.05, **extra
    )


def feed_message(*readings: Fed) -> bytes:
    """One state-feed message announcing `readings`, as ingest publishes it."""
    [message] = statefeed.encode(
        [statefeed.StoredReading(*r) for r in readings], chunk=len(readings)
    )
    return message


class Stack:
    """The app under test, a client for it, its live events, and publishers as ingest and as
    devices would publish."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient, servers: LocalServers, root: str):
        self.app = app
        self.client = client
        self.servers = servers
        self.root = root
        self.events: list[Event] = []
        live = app.state.runtime.live
        live.hub.listeners.append(self.events.append)

    async def feed(self, *readings: Fed) -> None:
        url = self.servers.mosquitto.url("citysense-ingest")
        topic = f"{self.root}/_ingested/test-worker"
        await asyncio.to_thread(publish, url, [(topic, feed_message(*readings))], qos=0)

    async def status(self, profile: str, device_id: str, word: bytes) -> None:
        url = self.servers.mosquitto.url("citysense-simulator")
        topic = f"{self.root}/{profile}/{device_id}/status"
        await asyncio.to_thread(retain, url, topic, word)

    async def device(self, device_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/devices/{device_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@asynccontextmanager
async def stack_for(
    settings: ApiSettings,
    servers: LocalServers,
    influx_transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[Stack]:
    """The app of `settings` running, once it subscribed to the state feed; `influx_transport`
    under its InfluxDB client, if given."""
    app = create_app(settings, influx_transport=influx_transport)
    async with running(app) as client:
        live = app.state.runtime.live
        await until(live.feed.subscribed.is_set, 10, "the state feed subscription")
        yield Stack(app, client, servers, settings.topic_root)


def count_calls(obj: object, name: str) -> list[int]:
    """From now on, count the completed calls of the coroutine method `name` of `obj` (patched
    on the instance), so that a test waits for it to have run rather than sleeping as long as it
    might take. The count is the list's one item."""
    original = getattr(obj, name)
    calls = [0]

    async def counted(*args: Any, **kwargs: Any) -> Any:
        result = await original(*args, **kwargs)
        calls[0] += 1
        return result

    setattr(obj, name, counted)
    return calls
