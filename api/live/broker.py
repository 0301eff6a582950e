"""Is the MQTT broker accepting us? A real CONNECT with the configured credentials.

A TCP connect would only prove the port is open; a successful CONNACK proves the broker is up,
knows our user, and accepts our password. paho-mqtt is blocking, so callers run this in a thread.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from common.mqtturl import MqttUrl


def check_broker(url: MqttUrl, timeout: float) -> str | None:
    """None if the broker answered CONNECT with a successful CONNACK within `timeout` seconds,
    otherwise why not. The password never appears in the answer."""
    # A fresh client id and a clean session: the probe must neither take over another client's
    # session (same id) nor leave a persistent session behind on the broker.
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"citysense-health-{secrets.token_hex(6)}",
        clean_session=True,
        reconnect_on_failure=False,
    )
    url.configure(client)
    client.connect_timeout = timeout
    answers: list[ReasonCode] = []

    def on_connect(*args: Any) -> None:
        # VERSION2 signature: (client, userdata, connect_flags, reason_code, properties).
        answers.append(args[3])

    client.on_connect = on_connect
    deadline = time.monotonic() + timeout
    where = url.redacted()
    try:
        client.connect(url.host, url.port, keepalive=max(5, math.ceil(timeout) * 2))
        while not answers and (left := deadline - time.monotonic()) > 0:
            if client.loop(timeout=min(0.1, left)) is not MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
    except OSError as exc:
        return f"cannot connect to {where}: {type(exc).__name__}: {exc}"
    finally:
        client.disconnect()
        client.loop(timeout=0)  # flushes the DISCONNECT and closes the socket
    if not answers:
        return f"no CONNACK from {where} within {timeout:g}s"
    if answers[0].is_failure:
        return f"{where} refused the connection: {answers[0]}"
    return None


class BrokerProbe:
    """`check_broker` at most once per `every` seconds, one probe at a time: /health is open to
    anyone, and must not let anyone make this process open broker connections at will."""

    def __init__(self, url: MqttUrl, timeout: float, every: float) -> None:
        self._url = url
        self._timeout = timeout
        self._every = every
        self._lock = asyncio.Lock()
        self._answer: str | None = None
        self._at = -math.inf
        self.probes = 0

    async def problem(self) -> str | None:
        async with self._lock:  # concurrent askers wait for the one probe
            if time.monotonic() - self._at >= self._every:
                # paho blocks; a worker thread keeps the event loop serving meanwhile.
                self._answer = await asyncio.to_thread(check_broker, self._url, self._timeout)
                self._at = time.monotonic()
                self.probes += 1
            return self._answer
