"""The API's MQTT subscriber: the state feed ingest publishes after each stored batch
(wire.statefeed) and the devices' retained connection status (`online` / `offline`), both on
the topics of wire.topics.

paho runs its network loop in its own thread; messages are parsed there and handed to the event
loop with `call_soon_threadsafe`, where the state is updated. The feed is QoS 0 and the session is
clean: what is lost while we are away is recovered from InfluxDB (start-up load, reconcile), and
retained status messages are delivered again on every (re)subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from common.mqtturl import MqttUrl
from wire import statefeed
from wire.topics import STATUS_WORDS, TopicLayout

logger = logging.getLogger(__name__)

FeedSink = Callable[[list[statefeed.Announced]], None]
StatusSink = Callable[[str, str, bool], None]


class FeedSubscriber:
    def __init__(
        self,
        url: MqttUrl,
        root: str,
        loop: asyncio.AbstractEventLoop,
        on_feed: FeedSink,
        on_status: StatusSink,
        *,
        on_crash: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._on_crash = on_crash
        self._url = url
        self._topics = TopicLayout(root)
        self._loop = loop
        self._on_feed = on_feed
        self._on_status = on_status
        self.subscribed = asyncio.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"citysense-api-{secrets.token_hex(6)}",
            clean_session=True,
        )
        url.configure(self._client)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._connected
        self._client.on_subscribe = self._on_subscribed
        self._client.on_message = self._message

    @property
    def topics(self) -> list[tuple[str, int]]:
        return [(self._topics.state_feed_subscription, 0), (self._topics.status_subscription, 1)]

    def start(self) -> None:
        # connect_async: a broker that is down at start must not stop the API from serving;
        # paho keeps retrying in its loop thread.
        self._client.connect_async(self._url.host, self._url.port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect without waiting for paho's thread: while the broker is unreachable it
        sleeps up to a second between retries, and shutdown need not wait for that."""
        self._client.disconnect()
        threading.Thread(target=self._client.loop_stop, name="mqtt-stop", daemon=True).start()

    def _connected(self, *args: Any) -> None:
        reason = args[3]
        if reason.is_failure:
            logger.warning("state feed: broker %s refused us: %s", self._url.redacted(), reason)
            return
        # Clean session: subscribe again on every connect.
        self._client.subscribe(self.topics)

    def _on_subscribed(self, *_args: Any) -> None:
        self._hand_over(self.subscribed.set)

    def _message(self, _client: Any, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        # In paho's thread: an exception escaping would end it silently, and the live state
        # with it.
        try:
            self._take(message)
        except Exception as exc:
            if self._on_crash is None:
                raise
            self._on_crash(exc)

    def _take(self, message: mqtt.MQTTMessage) -> None:
        topic = message.topic
        status = self._topics.parse_status(topic)
        if status is not None:
            online = STATUS_WORDS.get(bytes(message.payload).strip().lower())
            if online is not None:
                self._hand_over(self._on_status, *status, online)
            return
        try:
            readings = statefeed.decode(bytes(message.payload))
        except ValueError as exc:
            logger.warning("state feed: a message on %s is %s; ignored", topic, exc)
            return
        self._hand_over(self._on_feed, readings)

    def _hand_over(self, sink: Callable[..., None], *args: Any) -> None:
        # The loop closes before this thread is stopped during shutdown; a message arriving in
        # between has nowhere to go and does not matter.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(sink, *args)
