"""The API's MQTT subscriber: the state feed ingest publishes after each stored batch
(wire.statefeed) and the devices' retained connection status (`online` / `offline`), both on
the topics of wire.topics.

paho runs its network loop in its own thread; messages are parsed there and handed to the event
loop with `call_soon_threadsafe`, where the state is updated.

With a `session` name (an API with a data folder, api.live.service), the subscription is an MQTT 5
session the broker keeps for `session_expiry` seconds while we are away, holding the feed's
messages meanwhile (the broker queues QoS 0 messages for an absent session: `queue_qos0_messages`
in citysense/conf/mosquitto.conf): a restart takes them from the broker instead of querying
InfluxDB again (api.live.coverage). A connection on which the broker had no session for us is
reported (`on_session_lost`): whatever it held is gone. Without a name, the session is clean and
what is lost while away is recovered from InfluxDB. Retained status messages are delivered again
on every (re)subscription either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from common.mqtturl import MqttUrl
from wire import statefeed
from wire.topics import STATUS_WORDS, TopicLayout

logger = logging.getLogger(__name__)

FeedSink = Callable[[statefeed.Message], None]
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
        session: str | None = None,
        session_expiry: int = 300,
        on_session_lost: Callable[[], None] | None = None,
        backlog: int = 200,
    ) -> None:
        self._on_crash = on_crash
        self._session = session
        self._session_expiry = session_expiry
        self._on_session_lost = on_session_lost
        # A connection without the session we had is a loss: one of this process's (any
        # reconnection of a clean session), or the one a snapshot was taken under (the service
        # sets this when it restores one).
        self.expect_session = False
        # time.monotonic() of the last feed message taken (paho's thread writes, the loop reads
        # a float: atomic): how the start tells the broker's held messages have all come.
        self.last_message_at = 0.0
        # Feed messages handed over and not yet applied (`applied` gives one back). At the bound
        # paho's thread waits, and the broker holds the rest: a burst (the messages it kept
        # while we were away) is slowed, not dropped, which would cost a catch-up from InfluxDB.
        self._room = threading.BoundedSemaphore(backlog)
        self._stopping = threading.Event()
        self._url = url
        self._topics = TopicLayout(root)
        self._loop = loop
        self._on_feed = on_feed
        self._on_status = on_status
        self.subscribed = asyncio.Event()
        # Set once the first attempt is over: subscribed, or the broker unreachable or refusing
        # us (the start waits for this, not for a subscription that may be long in coming).
        self.first_attempt = asyncio.Event()
        if session is None:
            self._client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=f"citysense-api-{secrets.token_hex(6)}",
                clean_session=True,
            )
        else:
            self._client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=session, protocol=mqtt.MQTTv5
            )
        url.configure(self._client)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._connected
        self._client.on_subscribe = self._on_subscribed
        self._client.on_disconnect = self._disconnected
        self._client.on_connect_fail = self._attempted
        self._client.on_message = self._message

    @property
    def topics(self) -> list[tuple[str, int]]:
        return [(self._topics.state_feed_subscription, 0), (self._topics.status_subscription, 1)]

    def start(self) -> None:
        # connect_async: a broker that is down at start must not stop the API from serving;
        # paho keeps retrying in its loop thread.
        if self._session is None:
            self._client.connect_async(self._url.host, self._url.port, keepalive=30)
        else:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self._session_expiry
            self._client.connect_async(
                self._url.host, self._url.port, keepalive=30, clean_start=False, properties=props
            )
        self._client.loop_start()

    def stop(self) -> threading.Thread:
        """Disconnect without waiting for paho's thread: while the broker is unreachable it
        sleeps up to a second between retries, and shutdown need not wait for that. The thread
        stopping it is returned, for a caller that wants every message it took handed over."""
        self._stopping.set()
        self._client.disconnect()
        stopping = threading.Thread(target=self._client.loop_stop, name="mqtt-stop", daemon=True)
        stopping.start()
        return stopping

    def running(self) -> bool:
        """Whether paho's network thread still runs (or a stop was asked for): it ends on any
        exception but OSError and says nothing, and the feed with it (api.live.service looks)."""
        thread = self._client._thread
        return self._stopping.is_set() or (thread is not None and thread.is_alive())

    def _connected(self, *args: Any) -> None:
        flags, reason = args[2], args[3]
        if reason.is_failure:
            logger.warning("state feed: broker %s refused us: %s", self._url.redacted(), reason)
            self._attempted()
            return
        # Whatever was announced while we were away is gone: a clean session keeps nothing, and
        # a kept one may have expired (or the broker lost it with its state).
        if self.expect_session and (self._session is None or not flags.session_present):
            logger.info("state feed: reconnected without the session we had")
            if self._on_session_lost is not None:
                self._hand_over(self._on_session_lost)
        self.expect_session = True
        # Subscribed again on every connect: a no-op on a session the broker kept.
        self._client.subscribe(self.topics)

    def _on_subscribed(self, *args: Any) -> None:
        # A SUBACK can refuse (the topic root's ACL): subscribed then would have the start and
        # /metrics count on a feed that brings nothing, the state following InfluxDB's change
        # marks at the reconcile's pace with nothing said.
        refused = [reason for reason in args[3] if reason.is_failure]
        if refused:
            logger.error(
                "state feed: broker %s refused the subscription (%s): the latest state follows "
                "InfluxDB's change marks only, at each catch-up",
                self._url.redacted(),
                ", ".join(str(reason) for reason in refused),
            )
        else:
            self._hand_over(self.subscribed.set)
        self._attempted()

    def _disconnected(self, *_args: Any) -> None:
        self._hand_over(self.subscribed.clear)  # subscribed again on the next connect

    def _attempted(self, *_args: Any) -> None:
        self._hand_over(self.first_attempt.set)

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
            decoded = statefeed.decode(bytes(message.payload))
        except ValueError as exc:
            logger.warning("state feed: a message on %s is %s; ignored", topic, exc)
            return
        while not self._room.acquire(timeout=0.5):
            if self._stopping.is_set():
                return  # not applied: with a kept session, a gap the next start sees
        self.last_message_at = time.monotonic()
        self._hand_over(self._on_feed, decoded)

    def applied(self) -> None:
        """A message handed over is applied (or dropped): room for the next."""
        self._room.release()

    def _hand_over(self, sink: Callable[..., None], *args: Any) -> None:
        # The loop closes before this thread is stopped during shutdown; a message arriving in
        # between has nowhere to go and does not matter.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(sink, *args)
