"""Server-Sent Events over a real HTTP server (uvicorn), fed by the state feed: filters by
profile and district, and the token's scope."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI

from api.live.hub import Hub
from api.main import create_app
from citysense.servers import LocalServers, free_port
from common.influx import InfluxConfig
from tests.support.api import TOKENS, write_tokens
from tests.support.mqtt import publish
from tests.support.polling import wait_for
from tests.support.state import feed_message, live_settings

pytestmark = pytest.mark.integration


def clients(app: FastAPI) -> int:
    """SSE clients subscribed to the running app's live events."""
    hub: Hub = app.state.runtime.live.hub
    return hub.clients


def test_sse_pushes_filtered_scoped_events(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
    settings = live_settings(servers, influx, tmp_path, topic_root).model_copy(
        update={
            "api_auth": "on",
            "api_tokens": write_tokens(tmp_path / "tokens.yaml"),
            "api_stream_heartbeat": 0.2,
        }
    )
    port = free_port()
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 20, what="API up")
    received: dict[str, list[dict[str, object]]] = {"north-water": [], "lights": []}

    def listen(name: str, token: str, params: dict[str, str]) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.stream("GET", f"{base}/stream", params=params, headers=headers, timeout=10) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            event = None
            for line in r.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "reading":
                    received[name].append(orjson.loads(line[6:]))
                    if len(received[name]) >= 1:
                        return

    listeners = [
        threading.Thread(
            target=listen, args=("north-water", TOKENS["water-north"], {"kind": "reading"})
        ),
        threading.Thread(
            target=listen,
            args=("lights", TOKENS["lights"], {"district": "King's Cross", "kind": "reading"}),
        ),
    ]
    for t in listeners:
        t.start()
    try:
        wait_for(lambda: clients(app) == 2, 10, 0.02, "both listeners subscribed")
        now = time.time_ns()
        readings = [
            ("streetlight", "SL-A1", "North", now, {"powerState": "on"}),  # nobody's filter
            ("water_pipe", "WP-K1", "King's Cross", now, {"pressure": 1.0}),  # outside water-north
            ("water_pipe", "WP-A1", "North", now, {"pressure": 2.0}),
            ("streetlight", "SL-K1", "King's Cross", now, {"powerState": "off"}),
        ]
        publish(
            servers.mosquitto.url("citysense-ingest"),
            [(f"{topic_root}/_ingested/w", feed_message(*readings))],
            qos=0,
        )
        for t in listeners:
            t.join(10)
        assert [e["device_id"] for e in received["north-water"]] == ["WP-A1"]
        assert received["north-water"][0]["values"] == {"pressure": 2.0}
        assert [e["device_id"] for e in received["lights"]] == ["SL-K1"]
        portal = httpx.get(
            f"{base}/stream", headers={"Authorization": f"Bearer {TOKENS['portal']}"}
        )
        assert portal.status_code == 403
        assert httpx.get(f"{base}/stream").status_code == 401
        outside = httpx.get(
            f"{base}/stream",
            params={"profile": "streetlight"},
            headers={"Authorization": f"Bearer {TOKENS['water-north']}"},
        )
        assert outside.status_code == 403
    finally:
        server.should_exit = True
        thread.join(10)


def test_sse_burst_arrives_whole_and_in_order(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
    # A feed message of many readings is written to a client in few chunks of many events:
    # every event must still arrive, whole and in order.
    settings = live_settings(servers, influx, tmp_path, topic_root)
    port = free_port()
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 20, what="API up")
    burst = 300
    received: list[tuple[int, dict[str, object]]] = []

    def listen() -> None:
        with httpx.stream("GET", f"{base}/stream", params={"kind": "reading"}, timeout=10) as r:
            seq = None
            for line in r.iter_lines():
                if line.startswith("id: "):
                    seq = int(line[4:])
                elif line.startswith("data: ") and seq is not None:
                    received.append((seq, orjson.loads(line[6:])))
                    if len(received) == burst:
                        return

    listener = threading.Thread(target=listen)
    listener.start()
    try:
        wait_for(lambda: clients(app) == 1, 10, 0.02, "the listener subscribed")
        now = time.time_ns()
        readings = [
            ("water_pipe", "WP-A1", "North", now + n, {"pressure": float(n)}) for n in range(burst)
        ]
        publish(
            servers.mosquitto.url("citysense-ingest"),
            [(f"{topic_root}/_ingested/w", feed_message(*readings))],
            qos=0,
        )
        listener.join(10)
        assert [body["values"] for _, body in received] == [
            {"pressure": float(n)} for n in range(burst)
        ]
        seqs = [seq for seq, _ in received]
        assert seqs == sorted(seqs) and len(set(seqs)) == burst
    finally:
        server.should_exit = True
        thread.join(10)
