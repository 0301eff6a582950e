"""Publish simulated messages to the broker at QoS 1 and wait until the broker has every one.

MQTT v5, so the broker can say no per message: Mosquitto acknowledges a publish its ACL denies
with "Not authorized" under v5, where v3.1.1 acknowledges it as a success and drops it.

Flow control is ours, not paho's: at most `window` messages are unacknowledged at a time (never
more than the broker's Receive Maximum). paho's own in-flight limit is switched off because it
makes every PUBACK walk paho's whole outgoing queue, which halved the rate in our measurements;
with the window paho's queue never holds more than `window` messages, so it needs no limit either.
"""

from __future__ import annotations

import secrets
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from common.errors import BrokerError
from common.mqtturl import MqttUrl
from simulators.faults import DUPLICATE
from simulators.fleet import SimMessage

QOS = 1
DEFAULT_WINDOW = 1_000
MAX_WINDOW = 65_000  # paho numbers messages 1..65535 and refuses a number still in flight
PROGRESS_EVERY_S = 1.0


@dataclass(frozen=True, slots=True)
class PublishReport:
    messages: int
    valid_readings: int  # readings ingest should store
    bad_messages_by_reason: dict[str, int] = field(default_factory=dict)  # expected rejections
    duplicates: int = 0  # re-published messages
    seconds: float = 0.0
    rate: float = 0.0  # messages per second, first publish to last acknowledgement
    interrupted: bool = False  # stopped early (signal, Ctrl-C); everything sent was acknowledged

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Publisher:
    """One MQTT connection for publishing; use as a context manager."""

    def __init__(
        self,
        url: MqttUrl,
        *,
        client_id: str | None = None,
        window: int = DEFAULT_WINDOW,
        connect_timeout: float = 10.0,
        ack_timeout: float = 30.0,
    ) -> None:
        if not 1 <= window <= MAX_WINDOW:
            raise ValueError(f"window must be within 1..{MAX_WINDOW}, not {window}")
        self.url = url
        self.client_id = client_id or f"citysense-sim-{secrets.token_hex(4)}"
        self.window = window
        self.connect_timeout = connect_timeout
        self.ack_timeout = ack_timeout
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5
        )
        url.configure(self._client)
        self._client.max_inflight_messages_set(0)  # see the module docstring: the window rules
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(1, 10)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._changed = threading.Condition()
        self._connack: ReasonCode | None = None
        self._connected = False
        # `_sent` is written by the caller's thread only, `_acked` and `_last_ack` by paho's
        # network thread only; the condition is for waiting, not for guarding them.
        self._sent = 0
        self._acked = 0
        self._last_ack = time.monotonic()
        self._refused: Counter[str] = Counter()

    # --- paho callbacks (network thread) ------------------------------------------------------

    def _on_connect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        receive_maximum = getattr(properties, "ReceiveMaximum", None)
        with self._changed:
            if isinstance(receive_maximum, int) and receive_maximum < self.window:
                self.window = receive_maximum  # more unacknowledged would break the session
            self._connack = reason
            self._connected = not reason.is_failure
            self._changed.notify_all()

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.DisconnectFlags,
        _reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        # paho reconnects by itself and resends what was not acknowledged.
        with self._changed:
            self._connected = False
            self._changed.notify_all()

    def _on_publish(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _mid: int,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._refused[str(reason)] += 1
        self._last_ack = time.monotonic()
        self._acked += 1
        with self._changed:
            self._changed.notify_all()

    # --- connection -----------------------------------------------------------------------------

    def __enter__(self) -> Publisher:
        self.connect()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.close()

    def connect(self) -> None:
        """Connect and wait for the broker's answer; BrokerError if it is unreachable or says no."""
        where = self.url.redacted()
        try:
            self._client.connect(self.url.host, self.url.port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise BrokerError(f"cannot reach the MQTT broker at {where}: {exc}") from exc
        self._client.loop_start()
        with self._changed:
            self._changed.wait_for(lambda: self._connack is not None, self.connect_timeout)
            answer = self._connack
        if answer is None:
            self.close()
            raise BrokerError(
                f"no answer from the MQTT broker at {where} in {self.connect_timeout:g}s"
            )
        if answer.is_failure:
            self.close()
            raise BrokerError(
                f"the MQTT broker at {where} refused the connection: {answer}"
                " (check the user name and password in CITYSENSE_MQTT_URL)"
            )

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    # --- publishing ------------------------------------------------------------------------------

    def publish(
        self,
        messages: Iterable[SimMessage],
        *,
        rate: float = 0.0,
        duration: float | None = None,
        pace: bool = False,
        progress: bool = False,
        stop: threading.Event | None = None,
    ) -> PublishReport:
        """Send `messages` (consumed lazily) and wait until the broker acknowledged all of them.

        `rate` caps messages per second (0: as fast as the broker takes them); `duration` stops
        taking messages after that many seconds; `pace` holds each message until its `due_ms`
        (live mode); `stop` ends early when set, as does Ctrl-C. Raises BrokerError if the broker
        refuses messages or stops acknowledging them for `ack_timeout` seconds.
        """
        stop = stop or threading.Event()
        start = time.monotonic()
        pacer = _Pacer(start, start + duration if duration else None, rate, pace, stop)
        readings = duplicates = 0
        reasons: Counter[str] = Counter()
        sent_before, acked_before = self._sent, self._acked
        self._refused.clear()
        next_progress = start + PROGRESS_EVERY_S
        interrupted = False
        try:
            for message in messages:
                if not pacer.hold(message, self._sent - sent_before):
                    interrupted = stop.is_set()
                    break
                self._send(message)
                readings += len(message.readings)
                reasons.update(message.rejections)
                duplicates += message.fault == DUPLICATE
                if progress and time.monotonic() >= next_progress:
                    next_progress += PROGRESS_EVERY_S
                    self._progress(start, self._sent - sent_before, self._acked - acked_before)
        except KeyboardInterrupt:
            interrupted = True
        self._drain()
        if progress:
            self._progress(start, self._sent - sent_before, self._acked - acked_before)
        if self._refused:
            refused = ", ".join(f"{n} {reason!r}" for reason, n in self._refused.items())
            raise BrokerError(
                f"the MQTT broker refused messages: {refused}; is user {self.url.username!r}"
                " allowed to publish on this topic root by the broker's ACL?"
            )
        seconds = time.monotonic() - start
        count = self._sent - sent_before
        return PublishReport(
            messages=count,
            valid_readings=readings,
            bad_messages_by_reason=dict(reasons),
            duplicates=duplicates,
            seconds=round(seconds, 3),
            rate=round(count / seconds, 1) if seconds > 0 else 0.0,
            interrupted=interrupted,
        )

    def _send(self, message: SimMessage) -> None:
        if self._sent - self._acked >= self.window:
            self._wait_acks(lambda: self._sent - self._acked < self.window)
        info = self._client.publish(message.topic, message.payload, qos=QOS)
        # NO_CONN: paho keeps the message and sends it once it has reconnected.
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise BrokerError(f"publish failed: {mqtt.error_string(info.rc)}")
        self._sent += 1

    def _drain(self) -> None:
        self._wait_acks(lambda: self._acked >= self._sent)

    def _wait_acks(self, done: Callable[[], bool]) -> None:
        waiting_since = time.monotonic()
        with self._changed:
            while not done():
                if time.monotonic() - max(self._last_ack, waiting_since) > self.ack_timeout:
                    missing = self._sent - self._acked
                    state = "connected" if self._connected else "disconnected"
                    raise BrokerError(
                        f"the MQTT broker at {self.url.redacted()} acknowledged nothing for"
                        f" {self.ack_timeout:g}s ({missing} messages outstanding, {state})"
                    )
                self._changed.wait(0.5)

    @staticmethod
    def _progress(start: float, sent: int, acked: int) -> None:
        elapsed = time.monotonic() - start
        rate = sent / elapsed if elapsed > 0 else 0.0
        print(
            f"published {sent:,} messages ({acked:,} acknowledged), {rate:,.0f} msg/s,"
            f" {elapsed:,.0f}s",
            file=sys.stderr,
            flush=True,
        )


@dataclass(frozen=True, slots=True)
class _Pacer:
    """When the next message may go: rate cap, live due times, run deadline, stop request."""

    start: float
    deadline: float | None
    rate: float
    pace: bool
    stop: threading.Event

    def hold(self, message: SimMessage, sent: int) -> bool:
        """Wait until `message`, the run's (sent+1)th, may go; False if the run ends first."""
        wait = message.due_ms / 1000 - time.time() if self.pace else 0.0
        if self.rate > 0:
            wait = max(wait, self.start + sent / self.rate - time.monotonic())
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0 or wait >= left:
                self.stop.wait(max(0.0, left))
                return False
        if wait > 0:
            self.stop.wait(wait)
        return not self.stop.is_set()


def publish(
    url: MqttUrl,
    messages: Iterable[SimMessage],
    *,
    rate: float = 0.0,
    duration: float | None = None,
    pace: bool = False,
    progress: bool = False,
    stop: threading.Event | None = None,
) -> PublishReport:
    """Connect, publish everything (see Publisher.publish), disconnect."""
    with Publisher(url) as publisher:
        return publisher.publish(
            messages, rate=rate, duration=duration, pace=pace, progress=progress, stop=stop
        )
