"""An MQTT publisher and subscriber independent of the code under test (plain paho), a stream
that survives broker restarts, and retained messages."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from common.mqtturl import MqttUrl
from tests.support.polling import wait_for


def publish(url: str, messages: Iterable[tuple[str, bytes]], *, qos: int = 1) -> int:
    """Publish at QoS 1 and wait until the broker acknowledged every message."""
    parsed = MqttUrl.parse(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-pub-{secrets.token_hex(4)}")
    parsed.configure(client)
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


def publish_v5(url: str, topic: str, payload: bytes, *, retain: bool = False) -> ReasonCode:
    """One QoS 1 publish over MQTT 5, and the reason code of the broker's PUBACK: under MQTT 5
    Mosquitto answers a publish its ACL denies with "Not authorized" (under 3.1.1 it
    acknowledges it as a success and drops it)."""
    parsed = MqttUrl.parse(url)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"test-pub5-{secrets.token_hex(4)}",
        protocol=mqtt.MQTTv5,
    )
    parsed.configure(client)
    answers: list[ReasonCode] = []
    client.on_publish = lambda _c, _u, _mid, reason, _p: answers.append(reason)
    client.connect(parsed.host, parsed.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=retain)
        wait_for(lambda: answers, 10, what=f"PUBACK for {topic}")
    finally:
        client.disconnect()
        client.loop_stop()
    return answers[0]


def subscriber(url: str, topic: str, on_payload: Callable[[bytes], object]) -> mqtt.Client:
    """A plain paho subscriber, subscribed before this returns; the caller disconnects it."""
    parsed = MqttUrl.parse(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-sub-{secrets.token_hex(4)}")
    parsed.configure(client)
    subscribed: list[bool] = []
    client.on_subscribe = lambda *_args: subscribed.append(True)
    client.on_message = lambda _c, _u, message: on_payload(message.payload)
    client.connect(parsed.host, parsed.port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    wait_for(lambda: subscribed, 10, what=f"subscription to {topic}")
    return client


def listen(url: str, filters: Iterable[str]) -> tuple[list[tuple[str, bytes]], mqtt.Client]:
    """A plain paho subscriber to every one of `filters`, subscribed before this returns, and
    what it hears as (topic, payload) in order of arrival; the caller disconnects it."""
    parsed = MqttUrl.parse(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-lis-{secrets.token_hex(4)}")
    parsed.configure(client)
    heard: list[tuple[str, bytes]] = []
    granted: list[bool] = []
    client.on_subscribe = lambda *_args: granted.append(True)
    client.on_message = lambda _c, _u, message: heard.append((message.topic, message.payload))
    client.connect(parsed.host, parsed.port)
    wanted = list(filters)
    for topic in wanted:
        client.subscribe(topic, qos=1)
    client.loop_start()
    wait_for(lambda: len(granted) == len(wanted), 10, what=f"subscriptions to {wanted}")
    return heard, client


def retain(url: str, topic: str, payload: bytes) -> None:
    """Publish `payload` retained (as a device's status is), acknowledged before this returns."""
    parsed = MqttUrl.parse(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    parsed.configure(client)
    client.connect(parsed.host, parsed.port)
    client.loop_start()
    client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


class Stream:
    """Publishes in a background thread, optionally rate-limited, surviving broker restarts:
    a persistent session and paho's own resend of unacknowledged QoS 1 messages on reconnect.

    `gate(n)`, if given, must be true before message n (from 0) goes out: a test that acts
    mid-stream opens the gate further once it acted, so the stream cannot end before it did,
    however slow the machine."""

    def __init__(
        self,
        url: str,
        messages: list[tuple[str, bytes]],
        rate: float = 0.0,
        gate: Callable[[int], bool] | None = None,
    ) -> None:
        self.messages = messages
        self.rate = rate
        self.gate = gate
        self.sent = 0
        parsed = MqttUrl.parse(url)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            clean_session=False,
            client_id=f"test-stream-{secrets.token_hex(4)}",
        )
        parsed.configure(self.client)
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
            while self.gate is not None and not self.gate(n):
                time.sleep(0.01)
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
