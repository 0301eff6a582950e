"""Test helpers: an independent MQTT publisher, polling, and reading back what InfluxDB holds."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import ClassVar, TypeVar

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from common.influx import InfluxClient, InfluxConfig
from common.mqtturl import MqttUrl
from common.process import die_with_parent

T = TypeVar("T")


def wait_for(
    check: Callable[[], T], timeout: float = 30.0, interval: float = 0.1, what: str = "condition"
) -> T:
    """Poll until `check()` is truthy; return it, or fail saying what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {value!r})")
        time.sleep(interval)


def publish(url: str, messages: Iterable[tuple[str, bytes]], *, qos: int = 1) -> int:
    """Publish at QoS 1 and wait until the broker acknowledged every message."""
    parsed = MqttUrl.parse(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-pub-{secrets.token_hex(4)}")
    client.username_pw_set(parsed.username, parsed.password)
    client.max_inflight_messages_set(500)
    client.max_queued_messages_set(0)
    client.connect(parsed.host, parsed.port)
    client.loop_start()
    infos = [client.publish(topic, payload, qos=qos) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(timeout=60)
        assert info.is_published(), "broker did not acknowledge a publish"
    client.disconnect()
    client.loop_stop()
    return len(infos)


def count(config: InfluxConfig, measurement: str, where: str = "") -> int:
    """Points in a measurement, counted by time (every point has one)."""
    with InfluxClient(config) as client:
        rows = client.query(f'SELECT * FROM "{measurement}" {where}', epoch="ns")
    return sum(len(s.values) for s in rows[0]) if rows else 0


def rows(config: InfluxConfig, query: str) -> list[dict[str, object]]:
    with InfluxClient(config) as client:
        result = client.query(query, epoch="ns")
    return [row for series in (result[0] if result else []) for row in series.rows()]


def subscriber(url: str, topic: str, on_payload: Callable[[bytes], object]) -> mqtt.Client:
    """A plain paho subscriber, subscribed before this returns; the caller disconnects it."""
    parsed = MqttUrl.parse(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-sub-{secrets.token_hex(4)}")
    client.username_pw_set(parsed.username, parsed.password)
    subscribed: list[bool] = []
    client.on_subscribe = lambda *_args: subscribed.append(True)
    client.on_message = lambda _c, _u, message: on_payload(message.payload)
    client.connect(parsed.host, parsed.port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    wait_for(lambda: subscribed, 10, what=f"subscription to {topic}")
    return client


class Stream:
    """Publishes in a background thread, optionally rate-limited, surviving broker restarts:
    a persistent session and paho's own resend of unacknowledged QoS 1 messages on reconnect."""

    def __init__(self, url: str, messages: list[tuple[str, bytes]], rate: float = 0.0) -> None:
        self.messages = messages
        self.rate = rate
        self.sent = 0
        parsed = MqttUrl.parse(url)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            clean_session=False,
            client_id=f"test-stream-{secrets.token_hex(4)}",
        )
        self.client.username_pw_set(parsed.username, parsed.password)
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.2, 2)
        self.client.connect(parsed.host, parsed.port)
        self.client.loop_start()
        self._infos: list[mqtt.MQTTMessageInfo] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        for n, (topic, payload) in enumerate(self.messages):
            if self.rate:
                delay = started + n / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            self._infos.append(self.client.publish(topic, payload, qos=1))
            self.sent = n + 1

    def wait_acked(self, timeout: float = 120) -> None:
        """Until the broker acknowledged every message (across any restarts). paho marks a
        publish made while disconnected as failed but keeps it and resends it on reconnect, so
        this polls the flag paho sets on PUBACK (is_published() would raise on the stale code)."""
        self._thread.join(timeout)
        wait_for(
            lambda: all(info._published for info in self._infos),
            timeout,
            0.2,
            "every message acknowledged by the broker",
        )
        self.client.disconnect()
        self.client.loop_stop()


class IngestProcess:
    """`citysense ingest` as a real process, so it can be SIGKILLed. Every one started is
    killed at the end of its test by the `ingest_processes` fixture, pass or fail."""

    started: ClassVar[list[subprocess.Popen[bytes]]] = []

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.env = env
        self.log = log
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def kill_all(cls) -> None:
        for proc in cls.started:
            if proc.poll() is None:
                proc.kill()  # a supervisor's workers die with it (PR_SET_PDEATHSIG)
                proc.wait()
        cls.started.clear()

    @property
    def port(self) -> str:
        return self.env["CITYSENSE_HTTP_PORT"]

    def start(self, wait_ready: bool = True) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "citysense.cli", "ingest", *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Gone with the test run even if pytest itself is killed before teardown.
                preexec_fn=die_with_parent,  # noqa: PLW1509 - prctl only, no locks taken
            )
        IngestProcess.started.append(self.proc)
        if wait_ready:
            wait_for(self.ready, 30, what="ingest /ready")

    def ready(self, port: str | None = None) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            url = f"http://127.0.0.1:{port or self.port}/ready"
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def metric(self, name: str, port: str | None = None) -> float:
        text = httpx.get(f"http://127.0.0.1:{port or self.port}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith(f"citysense_ingest_{name} "):
                return float(line.split()[1])
        raise KeyError(name)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def children(pid: int) -> list[int]:
    """Direct child processes of `pid`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found
