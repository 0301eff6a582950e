"""Test helpers: an independent MQTT publisher, polling, and reading back what InfluxDB holds."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from citysense.influx import InfluxClient, InfluxConfig
from citysense.mqtturl import MqttUrl

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
