"""Latest state from the in-process cache against the real servers: rebuilt from InfluxDB at
start, fed by the state feed (published here as ingest would, contract 3; how fast is measured
by `python -m bench.timings`), connection status from retained status topics (contract 4),
reporting transitions as events, filters, bounding box, GeoJSON, pagination, and reconciliation
with InfluxDB."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from api.main import create_app
from citysense.servers import LocalServers, free_port
from common.influx import InfluxClient, InfluxConfig
from ingest.changes import change_lines
from tests.support.api import api_settings, running
from tests.support.mqtt import retain
from tests.support.polling import until
from tests.support.seeding import REGISTRY, Point, line_protocol
from tests.support.state import Stack, fast_profiles, live_settings, stack_for
from tests.support.times import S, rfc3339
from wire.changes import window_of
from wire.retention import CHANGES

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture
async def stack(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str, now: int
) -> AsyncIterator[Stack]:
    points = [
        Point("streetlight", "SL-A1", "North", {"powerState": "on", "voltage": 230.0}, now - 1 * S),
        Point("streetlight", "SL-A2", "North", {"powerState": "off"}, now - 4 * S),  # late
        Point("streetlight", "SL-A4", "North", {"powerState": "on"}, now - 3600 * S),  # silent
        Point("water_pipe", "WP-A1", "North", {"pressure": 300.0}, now - 60 * S),  # on time (5m)
    ]
    with InfluxClient(influx) as client:
        client.write(line_protocol(points))
    # Retained before the API starts: the API must pick it up when it subscribes.
    await asyncio.to_thread(
        retain,
        servers.mosquitto.url("citysense-simulator"),
        f"{topic_root}/streetlight/SL-A2/status",
        b"offline",
    )
    settings = live_settings(
        servers, influx, tmp_path, topic_root, profiles=fast_profiles(tmp_path, "2s")
    )
    async with stack_for(settings, servers) as started:
        yield started


async def test_rebuilt_from_influx_at_start_with_status(stack: Stack, now: int) -> None:
    a1 = await stack.device("SL-A1")
    answered = time.time_ns()  # the API judged it at or before this
    assert a1["reading"] == {
        "time": rfc3339(now - S),
        "values": {"powerState": "on", "voltage": 230.0},
    }
    # Late once its reading is 3 s old (a 2 s interval), silent at 6 s: a start that slow on a
    # loaded machine may show it so, never before.
    if answered <= now - S + 3 * S:
        assert a1["status"]["reporting"] == "on_time"
    else:
        assert a1["status"]["reporting"] in ("on_time", "late", "silent")
    assert a1["status"]["last_seen"] == rfc3339(now - S)

    async def retained_seen() -> bool:  # the status retained before the start, just after SUBACK
        return (await stack.device("SL-A2"))["status"]["connected"] is False

    await until(retained_seen, 5, "the retained status")
    assert (await stack.device("SL-A3"))["status"]["reporting"] == "never"
    assert (await stack.device("SL-A4"))["status"]["reporting"] == "silent"
    assert (await stack.device("WP-A1"))["status"]["reporting"] == "on_time"


async def test_feed_updates_the_state(stack: Stack) -> None:
    newer = time.time_ns()
    await stack.feed(
        ("streetlight", "SL-A3", "North", newer, {"powerState": "low", "illuminanceLevel": 0.4}),
        ("streetlight", "SL-GHOST", "North", newer, {"powerState": "on"}),  # not registered
    )

    async def arrived() -> bool:
        return (await stack.device("SL-A3"))["reading"] is not None

    await until(arrived, 5, "the fed reading")
    a3 = await stack.device("SL-A3")
    assert a3["reading"] == {
        "time": rfc3339(newer),
        "values": {"powerState": "low", "illuminanceLevel": 0.4},
    }
    assert a3["status"]["reporting"] == "on_time"
    assert (await stack.client.get("/devices/SL-GHOST")).status_code == 404
    # an older reading (a node uploading its buffer) is history, not the latest state
    await stack.feed(("streetlight", "SL-A3", "North", newer - 10 * S, {"powerState": "off"}))
    await stack.feed(("streetlight", "SL-A3", "North", newer + 1, {"powerState": "on"}))
    await until(arrived, 1, "")

    async def newest() -> bool:
        return (await stack.device("SL-A3"))["reading"]["values"] == {"powerState": "on"}

    await until(newest, 5, "the newest reading")


async def test_reporting_transitions_are_events(stack: Stack) -> None:
    # The 2 s interval makes SL-A1 late 3 s after its last reading and silent after 6 s. A
    # fresh reading first: on a loaded machine the API may start after the seed's went late.
    await stack.feed(("streetlight", "SL-A1", "North", time.time_ns(), {"powerState": "on"}))

    async def on_time() -> bool:
        return (await stack.device("SL-A1"))["status"]["reporting"] == "on_time"

    await until(on_time, 5, "SL-A1 on time")

    def transitions() -> list[tuple[str, str]]:
        return [
            (e.data["from"], e.data["to"])
            for e in stack.events
            if e.kind == "reporting" and e.device_id == "SL-A1"
        ]

    # From the fresh reading on: a start slow enough let the seed's reading age already.
    seen = len(transitions())
    await until(lambda: ("late", "silent") in transitions()[seen:], 10, "SL-A1 going silent")
    assert transitions()[seen:] == [("on_time", "late"), ("late", "silent")]
    silent = (await stack.client.get("/devices", params={"status": "silent"})).json()
    assert "SL-A1" in [i["device_id"] for i in silent["items"]]
    await stack.feed(("streetlight", "SL-A1", "North", time.time_ns(), {"powerState": "on"}))
    await until(lambda: transitions()[-1:] == [("silent", "on_time")], 5, "SL-A1 back on time")


async def test_connection_status_is_kept_apart_and_evented(stack: Stack) -> None:
    await stack.status("streetlight", "SL-A1", b"online")
    await until(
        lambda: any(e.kind == "connection" and e.device_id == "SL-A1" for e in stack.events),
        5,
        "a connection event",
    )
    connected = (await stack.client.get("/devices", params={"connected": "true"})).json()
    assert [i["device_id"] for i in connected["items"]] == ["SL-A1"]
    offline = (await stack.client.get("/devices", params={"connected": "false"})).json()
    assert [i["device_id"] for i in offline["items"]] == ["SL-A2"]
    await stack.status("streetlight", "SL-A1", b"offline")  # the last will

    async def disconnected() -> bool:
        return (await stack.device("SL-A1"))["status"]["connected"] is False

    await until(disconnected, 5, "SL-A1 disconnected")
    event = [e for e in stack.events if e.kind == "connection" and e.device_id == "SL-A1"][-1]
    assert (event.data["from"], event.data["to"]) == (True, False)


async def test_filters_bbox_and_pages(stack: Stack) -> None:
    # write_registry places device n at (30.0n, 120.0n)
    coords = {d: (120 + n / 100, 30 + n / 100) for n, (d, _, _) in enumerate(REGISTRY, start=1)}
    box = "120.015,30.015,120.065,30.065"
    expected = sorted(d for d, (lon, lat) in coords.items() if 120.015 <= lon <= 120.065)
    body = (await stack.client.get("/devices", params={"bbox": box})).json()
    assert [i["device_id"] for i in body["items"]] == expected
    both = (
        await stack.client.get(
            "/devices", params={"bbox": box, "profile": "streetlight", "status": "never"}
        )
    ).json()
    assert [i["device_id"] for i in both["items"]] == ["SL-A3", "SL-H1", "SL-K1"]  # no data
    pages = [
        (await stack.client.get("/devices", params={"limit": 4, "offset": o})).json()
        for o in range(0, len(REGISTRY), 4)
    ]
    assert [i["device_id"] for p in pages for i in p["items"]] == sorted(coords)
    assert {p["total"] for p in pages} == {len(REGISTRY)}
    for bad in ("1,2,3", "a,b,c,d", "121,30,120,31", "0,0,0,nan"):
        response = await stack.client.get("/devices", params={"bbox": bad})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", "bbox"]
    assert (await stack.client.get("/devices", params={"status": "asleep"})).status_code == 422


async def test_geojson(stack: Stack, now: int) -> None:
    response = await stack.client.get(
        "/devices.geojson", params={"profile": "streetlight", "district": "North"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["type"] == "FeatureCollection"
    ids = sorted(d for d, p, district in REGISTRY if (p, district) == ("streetlight", "North"))
    assert [f["id"] for f in body["features"]] == ids
    a1 = body["features"][0]
    n = [d for d, _, _ in REGISTRY].index("SL-A1") + 1
    assert a1["geometry"] == {"type": "Point", "coordinates": [120 + n / 100, 30 + n / 100]}
    assert a1["properties"]["values"] == {"powerState": "on", "voltage": 230.0}
    assert a1["properties"]["last_seen"] == rfc3339(now - S)
    assert a1["properties"]["profile"] == "streetlight"
    assert a1["properties"]["reporting"] in ("on_time", "late", "silent")


async def test_a_catch_up_finds_a_stored_reading_the_feed_never_announced(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
    """A write with its change mark and no announcement (a replay, a lost feed message): the
    next catch-up queries that one part again, and later catch-ups, nothing having moved, none."""
    settings = live_settings(
        servers, influx, tmp_path, topic_root, api_state_reconcile_interval=0.5
    )
    async with stack_for(settings, servers) as started:
        live = started.app.state.runtime.live
        assert (await started.device("WP-A2"))["reading"] is None
        stored = time.time_ns()
        with InfluxClient(influx) as client:  # stored and marked, never announced
            client.write(
                line_protocol([Point("water_pipe", "WP-A2", "North", {"pressure": 1.5}, stored)])
            )
            marks = change_lines({("water_pipe", "North", window_of(stored))})
            client.write("\n".join(marks).encode(), policy=CHANGES)
        queried = live.parts_queried

        async def reconciled() -> bool:
            return (await started.device("WP-A2"))["reading"] is not None

        await until(reconciled, 5, "the catch-up")
        # The reading is merged before its catch-up ends and counts its queries (this test
        # polls on the same event loop): the end of the catch-up under way, or of the next.
        ended = live.caught_up
        await until(lambda: live.caught_up > ended, 5, "the catch-up's end")
        assert any(e.kind == "reading" and e.device_id == "WP-A2" for e in started.events)
        assert live.parts_queried == queried + 1  # water_pipe in North, nothing else
        # Later catch-ups find nothing moved: no queries, no events (at city scale, one per
        # device would overflow every live client's queue every reconcile).
        readings = sum(e.kind == "reading" for e in started.events)
        done, queried = live.caught_up, live.parts_queried
        await until(lambda: live.caught_up >= done + 3, 10, "three more catch-ups")
        assert live.parts_queried == queried
        assert sum(e.kind == "reading" for e in started.events) == readings


async def test_a_full_reload_finds_a_reading_written_without_a_mark(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
    settings = live_settings(
        servers,
        influx,
        tmp_path,
        topic_root,
        api_state_reconcile_interval=0.2,
        api_state_full_reload_interval=1.0,
    )
    async with stack_for(settings, servers) as started:
        assert (await started.device("WP-K1"))["reading"] is None
        with InfluxClient(influx) as client:  # by other means than ingest: no mark
            client.write(
                line_protocol(
                    [
                        Point(
                            "water_pipe", "WP-K1", "King's Cross", {"pressure": 1.5}, time.time_ns()
                        )
                    ]
                )
            )

        async def reloaded() -> bool:
            return (await started.device("WP-K1"))["reading"] is not None

        await until(reloaded, 10, "the full reload")


async def test_state_not_loaded_is_503_until_influx_answers(
    servers: LocalServers, tmp_path: Path, topic_root: str
) -> None:
    settings = api_settings(
        servers,
        InfluxConfig(url=f"http://127.0.0.1:{free_port()}", database="x"),
        tmp_path,
        topic_root=topic_root,
    )
    async with running(create_app(settings)) as client:
        for path in ("/devices", "/devices/SL-A1", "/devices.geojson"):
            response = await client.get(path)
            assert response.status_code == 503
            assert "latest state not loaded" in response.json()["detail"]
