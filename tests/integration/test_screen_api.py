"""What the operations screen asks the API besides its own routes (api.routes.screen), within each
token's scope; the page's files; and /stream resumed with Last-Event-ID over HTTP."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from api.core.settings import ApiSettings
from api.live.hub import Event
from api.main import create_app
from citysense.servers import LocalServers
from common.influx import InfluxConfig
from tests.support.api import TOKENS, api_settings, running, write_tokens
from tests.support.mqtt import publish
from tests.support.polling import until
from tests.support.screen import serve
from tests.support.seeding import REGISTRY
from tests.support.state import feed_message, live_settings

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


@pytest.fixture
def app_settings(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, seed: object
) -> ApiSettings:
    return api_settings(servers, influx, tmp_path, tokens=write_tokens(tmp_path / "tokens.yaml"))


@pytest.fixture
async def api(app_settings: ApiSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(app_settings)) as client:
        yield client


async def test_the_page_and_its_files_need_no_token_and_load_nothing_from_elsewhere(
    api: httpx.AsyncClient,
) -> None:
    assert (await api.get("/")).headers["location"] == "/screen"
    page = await api.get("/screen")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(urls) >= 6
    for url in urls:
        if url.startswith("data:"):
            continue
        assert url.startswith("/screen/assets/"), url
        response = await api.get(url)
        assert response.status_code == 200 and len(response.content) > 100, url
    for outside in ("../core/screen.py", "..%2F..%2Fmain.py", "vendor/leaflet/LICENSE", "nope.js"):
        assert (await api.get(f"/screen/assets/{outside}")).status_code == 404, outside


async def test_view_says_what_each_scope_may_read(api: httpx.AsyncClient) -> None:
    city = (await api.get("/screen/view", headers=auth("city"))).json()
    assert (city["scope"], city["acknowledge"], city["dead_letters"]) == ("city", False, True)
    assert sorted(city["profiles"]) == ["power_meter", "streetlight", "water_pipe"]
    water = (await api.get("/screen/view", headers=auth("water-north"))).json()
    assert list(water["profiles"]) == ["water_pipe"] and water["districts"] == ["North"]
    assert water["acknowledge"] is True and water["dead_letters"] is False
    assert water["profiles"]["water_pipe"]["fields"]["pressure"]["unit"] == "kPa"
    portal = (await api.get("/screen/view", headers=auth("portal"))).json()
    assert portal["devices"] is False
    assert (await api.get("/screen/view")).status_code == 401


async def test_state_holds_the_scope_s_devices_only(api: httpx.AsyncClient) -> None:
    body = (await api.get("/screen/state", headers=auth("lights"))).json()
    lights = sorted(d for d, p, _ in REGISTRY if p == "streetlight")
    assert body["devices"]["id"] == lights
    assert {body["profiles"][i] for i in body["devices"]["profile"]} == {"streetlight"}
    reporting = [body["reporting"][i] for i in body["devices"]["reporting"]]
    assert reporting[body["devices"]["id"].index("SL-A3")] == "never"
    assert isinstance(body["event_id"], int)
    assert (await api.get("/screen/state", headers=auth("portal"))).status_code == 403
    outlines = (await api.get("/screen/districts.geojson", headers=auth("water-north"))).json()
    assert outlines["features"] == []  # the sample city has no district "North"
    city = (await api.get("/screen/districts.geojson", headers=auth("city"))).json()
    assert len(city["features"]) == 6


async def test_stream_resumes_after_last_event_id(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
    tokens = write_tokens(tmp_path / "tokens.yaml")
    app = create_app(live_settings(servers, influx, tmp_path, topic_root, tokens=tokens))
    with serve(app) as base:
        live = app.state.runtime.live
        await until(live.feed.subscribed.is_set, 10, "the state feed subscription")
        events: list[Event] = []
        live.hub.listeners.append(events.append)
        start = live.hub.last_id
        now = time.time_ns()
        readings = [
            r
            for n in range(5)
            for r in (
                ("water_pipe", "WP-A1", "North", now + n, {"pressure": 300.0 + n}),
                ("streetlight", "SL-A1", "North", now + n, {"powerConsumption": 50.0 + n}),
            )
        ]
        topic = f"{topic_root}/_ingested/w"
        message = feed_message(*readings)
        await asyncio.to_thread(
            publish, servers.mosquitto.url("citysense-ingest"), [(topic, message)], qos=0
        )
        await until(lambda: sum(e.kind == "reading" for e in events) == 10, 5, "the readings")

        async def first_frames(token: str, last: int | str) -> list[str]:
            headers = {**auth(token), "Last-Event-ID": str(last)}
            async with (
                httpx.AsyncClient(base_url=base) as client,
                client.stream("GET", "/stream", headers=headers) as response,
            ):
                text = ""
                async for chunk in response.aiter_text():
                    text += chunk
                    if text.count("\n\n") >= 2:  # `connected`, then the backlog in one write
                        break
            return [f for f in text.split("\n\n")[1:] if f]

        def ids(frames: list[str]) -> list[int]:
            return [int(f.split("id: ")[1].split("\n")[0]) for f in frames]

        middle = events[4].seq
        frames = await asyncio.wait_for(first_frames("city", middle), 5)
        assert ids(frames) == [e.seq for e in events if e.seq > middle]
        frames = await asyncio.wait_for(first_frames("lights", start), 5)
        assert ids(frames) == [e.seq for e in events if e.profile == "streetlight"]
        frames = await asyncio.wait_for(first_frames("city", 12), 5)
        assert frames[0].startswith("event: reset")
