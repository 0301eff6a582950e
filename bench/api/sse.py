"""Step 5: `--sse-clients` Server-Sent-Events streams open while an ingest worker stores live
readings published over MQTT at a paced rate; what each client received is judged in
bench.api.delivery."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.api.constants import HOST, ROOT
from bench.api.delivery import (
    CpuMeter,
    Delivery,
    Key,
    LiveRun,
    Measured,
    report_live,
    want_for,
)
from bench.api.figures import Timings
from bench.api.processes import ApiProcess, Stack, start_ingest
from bench.api.timing import Failed, timed_get
from citysense.children import Child, module_argv
from citysense.servers import LocalServers
from common.mqtturl import MqttUrl
from device_profiles import Device, Profile, load_profiles
from simulators.city import DISTRICTS
from simulators.fleet import LIVE, ExpectedReading, SimMessage, generate
from simulators.publish import PublishReport, publish
from wire.topics import TopicLayout


class FeedWatch:
    """When each reading's state-feed message (ingest -> API) arrived, seen by a subscriber of
    our own beside the API: splits delivery latency into ingest's part and the API's."""

    def __init__(self, url: str, root: str) -> None:
        self.seen: dict[tuple[str, int], int] = {}
        parsed = MqttUrl.parse(url)
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-feed-{os.getpid()}"
        )
        self._client.username_pw_set(parsed.username, parsed.password)
        self._client.on_message = self._message
        self._subscribed = threading.Event()
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.connect(parsed.host, parsed.port)
        self._client.subscribe(f"{root}/_ingested/+", qos=0)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("no SUBACK for the feed")

    def _message(self, _client: Any, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        now = time.time_ns()
        for reading in orjson.loads(message.payload).get("readings", ()):
            self.seen[(reading["device_id"], reading["time"])] = now

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class Probe(threading.Thread):
    """GET one device every `every` seconds: how requests fare while events flow."""

    def __init__(self, base: str, device_id: str, every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.base, self.path, self.every = base, f"/devices/{device_id}", every
        self.timings = Timings()
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=60) as client:
            while not self.stop.wait(self.every):
                try:
                    seconds, response = timed_get(client, self.path, {})
                    self.timings.add(seconds, len(response.content))
                except (Failed, httpx.HTTPError) as exc:
                    self.timings.errors.append(str(exc)[:160])


@dataclass
class SseClients:
    """bench.sse_clients as a child: every stream in one process, driven over its stdin and
    stdout (`ready`, `count`, `stop` -> `done`), its results in a JSON file."""

    child: Child
    out: Path

    @classmethod
    def start(cls, stack: Stack, port: int, paths: list[str]) -> SseClients:
        out = stack.home / "sse.json"
        child = stack.children.add(
            Child.start(
                module_argv("bench.sse_clients", HOST, str(port), "|".join(paths), str(out)),
                name="SSE clients",
                log=stack.home / "sse_clients.log",
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
        clients = cls(child, out)
        if clients._line() != "ready":
            raise RuntimeError(f"SSE clients did not connect:\n{child.tail()}")
        return clients

    def _line(self) -> str:
        assert self.child.proc.stdout is not None
        return str(self.child.proc.stdout.readline()).strip()

    def _say(self, line: str) -> None:
        assert self.child.proc.stdin is not None
        self.child.proc.stdin.write(f"{line}\n")
        self.child.proc.stdin.flush()

    def received(self) -> int:
        """Events received so far, all clients."""
        self._say("count")
        return int(self._line())

    def stop(self) -> None:
        self._say("stop")
        if self._line() != "done":
            raise RuntimeError(f"SSE clients failed:\n{self.child.tail()}")
        self.child.stop()

    def results(self) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = orjson.loads(self.out.read_bytes())
        return results


def stream_paths(clients: int, districts: list[str], filtered: bool) -> list[str]:
    """Each client's request: readings of the whole city, or (every other one, `filtered`) of
    one district."""
    return [
        "/stream?kind=reading"
        + (f"&district={districts[n % len(districts)]}" if filtered and n % 2 else "")
        for n in range(clients)
    ]


def recording(
    chosen: list[Device],
    profiles: dict[str, Profile],
    interval: float,
    sent: list[ExpectedReading],
) -> Iterator[SimMessage]:
    """Live readings of the chosen devices, each every `interval` s; what went out is kept in
    `sent`."""
    for message in generate(
        chosen,
        profiles,
        TopicLayout(ROOT),
        readings_per_device=0,
        array_ratio=0.0,
        fault_ratio=0.0,
        seed=17,
        time_mode=LIVE,
        interval_s=interval,
    ):
        sent.extend(message.readings)
        yield message


def drain(received: Callable[[], int], expected: int) -> None:
    """Until every client has every event, or nothing more arrives for 5 s."""
    last, still = -1, time.monotonic()
    while True:
        count = received()
        if count >= expected:
            return
        if count != last:
            last, still = count, time.monotonic()
        elif time.monotonic() - still > 5:
            return
        time.sleep(0.2)


def publish_live(
    servers: LocalServers,
    chosen: list[Device],
    profiles: dict[str, Profile],
    *,
    interval: float,
    seconds: float,
    probe: Probe,
) -> tuple[PublishReport, list[ExpectedReading]]:
    """Publish the chosen devices' live readings, paced, for `seconds`, the probe asking
    meanwhile; (what was published, the readings ingest should store)."""
    sent: list[ExpectedReading] = []
    probe.start()
    try:
        published = publish(
            MqttUrl.parse(servers.mosquitto.url("citysense-simulator")),
            recording(chosen, profiles, interval, sent),
            duration=seconds,
            pace=True,
        )
    finally:
        probe.stop.set()
    return published, sent[: published.valid_readings]


def bench_sse(stack: Stack, api: ApiProcess, devices: Sequence[Device], run: LiveRun) -> None:
    servers = stack.servers
    ingest = start_ingest(stack)
    districts = [d.name for d in DISTRICTS]
    paths = stream_paths(run.clients, districts, run.filtered)
    sse = SseClients.start(stack, api.port, paths)
    step = max(1, len(devices) // run.publishing_devices)
    chosen = list(devices)[::step][: run.publishing_devices]
    district_of = {d.device_id: d.district for d in devices}
    interval = max(1.0, len(chosen) / run.rate)
    profiles = load_profiles()
    feed = FeedWatch(servers.mosquitto.url("citysense-api"), ROOT)
    probe = Probe(api.base, chosen[0].device_id)
    before_stored = ingest.stored_readings()
    cpu = CpuMeter(api=api.child, ingest=ingest.child, clients=sse.child)
    published, expected = publish_live(
        servers, chosen, profiles, interval=interval, seconds=run.seconds, probe=probe
    )
    keys = {(r.device_id, r.time_ns) for r in expected}

    def want(n: int) -> set[Key]:
        return want_for(keys, district_of, districts, n, run.filtered)

    expected_events = sum(len(want(n)) for n in range(run.clients))
    ingest.wait_stored(before_stored + len(expected), 60)
    drain(sse.received, expected_events)
    used = cpu.finish()
    stored = ingest.stored_readings() - before_stored
    sse.stop()
    ingest.child.stop()
    feed.close()
    probe.join(5)
    delivery = Delivery.judge(sse.results(), keys, feed.seen, want)
    measured = Measured(
        published, len(chosen), interval, stored, expected_events, delivery, probe.timings, used
    )
    report_live(stack.report, run, measured)
