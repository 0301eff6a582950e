"""Consume: a paho-mqtt client with manual acknowledgement and a persistent session.

MQTT 5, clean start off and a session expiry, so the broker keeps our subscription and every
unacknowledged message while we are away; Receive Maximum tells it how many we may hold
unacknowledged (the batch being filled plus the one being written). paho reconnects with backoff
by itself in its loop thread; we resubscribe on every connect. paho's errors are translated here.

Retiring (a worker slot taken out of a shared subscription for good): connect under the slot's
client id, unsubscribe at once — Mosquitto then deals the group's new messages to the other
members but still delivers what it had queued for this session — and, once that is stored and
acknowledged, disconnect with a session expiry of 0 so that the broker forgets the session.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MessageType, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from common.errors import BrokerError
from common.mqtturl import MqttUrl
from ingest.stages import Received

log = logging.getLogger(__name__)

PUBACK = int(MessageType.PUBACK)
PINGREQ = int(MessageType.PINGREQ)
PUBLISH = int(MessageType.PUBLISH)
Handler = Callable[[Received], None]
Publish = Callable[[bytes, bytes, int, int, bool], None]  # raw topic, payload, id, QoS, DUP


READ_BURST = 500  # packets read per wake-up of paho's loop at most (_Client.loop_read)
RECV_CHUNK = 64 * 1024  # bytes asked of the socket at once (_Client._sock_recv)


class _Client(mqtt.Client):
    """paho's client with a fast path for the PUBLISH packets ingest receives, and reads in bursts.

    Why not paho's own path: for MQTT 5, paho 2.x decodes every PUBLISH's properties by building
    a `Properties` object, whose constructor fills two tables of every MQTT 5 property — 19 µs
    of the 21 µs paho spends decoding a message (measured, `timeit` on `_packet.decode_publish`;
    its MQTT 3.1.1 path takes 2 µs), and the reason a bare paho subscriber drains half as many
    messages a second with MQTT 5 as with 3.1.1. Ingest keeps MQTT 5 for its guarantees
    (Receive Maximum, session expiry, retain handling, ending a retired session), so it decodes
    the common case itself: QoS 0/1 with no properties (what devices send; ingest reads none of
    them). Anything else — properties present, QoS 2, paho's logging on, a malformed packet —
    goes through paho unchanged. The layout is MQTT 5's (§3.3): topic (2-byte length), packet
    id when QoS > 0, properties length (a variable byte integer, 0 for none), payload.
    tests/unit/test_consume_fast.py checks it against paho's own decoder.
    """

    on_publish_fast: Publish | None = None
    # Called (paho's thread, or whichever closes it) as a connection's socket is closed: every
    # loss goes through here before paho reconnects, some without on_disconnect (a select()
    # failing: paho's _loop returns, and loop_forever reconnects).
    on_socket_closed: Callable[[], None] | None = None
    # What one recv() brought beyond what paho asked for, and how far paho has read of it.
    _buffer: bytes = b""
    _read_at: int = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # paho holds this lock (a plain Lock) around on_message on its own path (a message with
        # properties, or its logging on), and takes it again to call on_disconnect. A write
        # from inside on_message (Consumer.keep_alive) that finds the connection gone calls
        # on_disconnect: with a plain Lock the thread would wait on itself for ever, alive but
        # reading nothing, and stop() would hang on it (a review's finding; test_consume_fast).
        self._in_callback_mutex = threading.RLock()  # type: ignore[assignment]

    def _sock_recv(self, bufsize: int) -> bytes:
        """paho's recv with a buffer in front: paho asks the socket for a packet's first byte,
        its length bytes and its body one recv() at a time — three system calls for every
        message (py-spy: 14 % of a draining worker). Here one recv() takes up to RECV_CHUNK
        bytes and paho's reads are served from them; errors and the end of the stream reach
        paho as before, from the socket itself, once the buffer is spent."""
        at, buffered = self._read_at, self._buffer
        if at >= len(buffered):
            data = super()._sock_recv(max(bufsize, RECV_CHUNK))
            if len(data) <= bufsize:
                return data
            at, buffered = 0, data
            self._buffer = data
        self._read_at = at + bufsize
        if self._read_at >= len(buffered):
            self._buffer, self._read_at = b"", 0
        return buffered[at : at + bufsize]

    def _sock_close(self) -> None:
        """Whatever was buffered belongs to the connection being closed."""
        self._buffer, self._read_at = b"", 0
        if self._sock is not None and self.on_socket_closed is not None:
            self.on_socket_closed()
        super()._sock_close()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Read packets until the socket has no more, up to READ_BURST, instead of one.

        Why: paho reads as many packets per wake-up as it has QoS > 0 messages of its own in
        flight, at least one — for a subscriber that publishes nothing at QoS 1, one packet per
        select(), plus its housekeeping, for every message (py-spy: 12 % of a draining worker in
        select alone). The socket is non-blocking, so the burst ends as soon as it is empty;
        acknowledgements queued meanwhile are written when it ends (at most READ_BURST messages
        later). Whole PUBLISH packets already in the buffer are taken from it directly
        (_take_buffered); anything else goes through paho's own _packet_read, unchanged."""
        del max_packets  # paho computes its own, and so do we
        read = 0
        fast = self.on_publish_fast
        if self._logger is not None or self._on_log is not None:
            fast = None  # paho's path logs every packet
        took = False
        try:
            # Past READ_BURST, on only while bytes wait in the buffer: select() cannot see them.
            while read < READ_BURST or self._read_at < len(self._buffer):
                if self._sock is None:
                    return MQTTErrorCode.MQTT_ERR_NO_CONN
                if fast is not None and self._take_buffered(fast):
                    took = True
                    read += 1
                    continue
                rc = self._packet_read()
                if rc > 0:
                    return self._loop_rc_handle(rc)
                if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                    break
                read += 1
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        finally:
            if took:  # what paho's _packet_read does after each packet, for its keepalive
                with self._msgtime_mutex:
                    self._last_bytes_received = time.monotonic()

    def _take_buffered(self, fast: Publish) -> bool:
        """Hand the next packet to `fast` straight from the buffer, if it is there whole, paho
        is between packets, and it is a PUBLISH decode_at takes; False leaves it to paho.

        Why: paho's _packet_read takes a packet in three _sock_recv calls (command, length,
        body), each copied into a bytearray, with a dictionary of its state rebuilt, a lock and
        a clock read twice, and two dispatches before _handle_publish — about 6 µs a message
        on the MQTT thread (bench.stages, 'paho's packet read'), now about 1.5."""
        buffered = self._buffer
        at = self._read_at
        end = len(buffered)
        if end - at < 2 or self._in_packet["command"]:
            return False
        command = buffered[at]
        if command & 0xF0 != PUBLISH:
            return False
        length, multiplier, pos = 0, 1, at + 1
        while True:  # the remaining length, a variable byte integer of at most 4 bytes
            if pos >= end or pos - at > 4:
                return False  # not all here, or malformed: paho's (which says so)
            byte = buffered[pos]
            pos += 1
            length += (byte & 127) * multiplier
            if not byte & 128:
                break
            multiplier *= 128
        body_end = pos + length
        if body_end > end:
            return False
        decoded = decode_at(command, buffered, pos, body_end)
        if decoded is None:
            return False
        if body_end == end:
            self._buffer, self._read_at = b"", 0
        else:
            self._read_at = body_end
        fast(*decoded)
        return True

    def _handle_publish(self) -> MQTTErrorCode:
        fast = self.on_publish_fast
        if fast is None or self._logger is not None or self._on_log is not None:
            return super()._handle_publish()
        decoded = decode_publish(self._in_packet["command"], self._in_packet["packet"])
        if decoded is None:
            return super()._handle_publish()
        fast(*decoded)
        # Manual acknowledgement: nothing to send now, the writer acks once the batch is stored.
        return MQTTErrorCode.MQTT_ERR_SUCCESS


_PUBACK = struct.Struct("!BBH")  # paho's own layout (_send_command_with_mid): type, length, id


def pubacks(mids: list[int]) -> bytes:
    """The PUBACK packets of QoS 1 messages, back to back, as paho would send each of them."""
    return b"".join([_PUBACK.pack(PUBACK, 2, mid) for mid in mids])


def send_packets(client: mqtt.Client, data: bytes, command: int = PUBACK) -> None:
    """Queue `data` (whole packets) as one write of paho's network thread, and wake it.

    Why not paho's `ack` per message: it queues each PUBACK as a packet of its own, written with
    a send() of its own, and writes a byte to its wake-up socket for each — two system calls a
    message. A stored batch's acknowledgements go here as one entry of paho's queue instead:
    one send() for thousands of them (the socket may take part; paho writes the rest later, as
    for any packet). Nothing in paho acts on a PUBACK it sent, so one entry for many is safe."""
    client._out_packet.append(
        {
            "command": command,
            "mid": 0,
            "qos": 0,
            "pos": 0,
            "to_process": len(data),
            "packet": data,
            "info": None,
        }
    )
    if client._sockpairW is not None:
        with contextlib.suppress(BlockingIOError):  # full: the thread is awake already
            client._sockpairW.send(b"0")


def decode_publish(
    command: int, packet: bytes | bytearray
) -> tuple[bytes, bytes, int, int, bool] | None:
    """(topic, payload, packet id, QoS, DUP) of an MQTT 5 PUBLISH of QoS 0 or 1 without properties;
    None for any other (left to paho)."""
    return decode_at(command, bytes(packet), 0, len(packet))


def decode_at(
    command: int, data: bytes, at: int, end: int
) -> tuple[bytes, bytes, int, int, bool] | None:
    """decode_publish of the packet body `data[at:end]`, without copying it out first. A
    retained message (sent only when a subscription is new) is left to paho, which reads its
    flag."""
    qos = (command & 0x06) >> 1
    if qos > 1 or end - at < 2 or command & 0x01:
        return None
    topic_end = at + 2 + ((data[at] << 8) | data[at + 1])
    pos = topic_end
    mid = 0
    if qos:
        if end < pos + 2:
            return None
        mid = (data[pos] << 8) | data[pos + 1]
        pos += 2
    if topic_end == at + 2 or (qos and mid == 0) or end <= pos or data[pos] != 0:
        return None  # no topic (an alias is a property), packet id 0, or properties: paho's
    return data[at + 2 : topic_end], data[pos + 1 : end], mid, qos, bool(command & 0x08)


class Consumer:
    def __init__(
        self,
        url: MqttUrl,
        *,
        client_id: str,
        subscription: str,
        receive_maximum: int,
        session_expiry: int,
        keepalive: int,
        on_received: Handler,
        on_session: Callable[[bool], None],
        on_lost: Callable[[], None],
        clock: Callable[[], int],
        retire: bool = False,
    ) -> None:
        self._url = url
        self._retire = retire
        self.unsubscribed = threading.Event()
        self.last_message = time.monotonic()
        self._subscription = subscription
        self._on_received = on_received
        self._on_session = on_session
        self._clock = clock
        self._receive_maximum = receive_maximum
        self._session_expiry = session_expiry
        self._keepalive = keepalive
        self._pinged = 0.0  # when keep_alive last pinged (time.monotonic)
        self.subscribed = threading.Event()
        self.thread_id: int | None = None  # paho's network thread's Linux id, once connected
        self._queued_acks: list[int] = []  # QoS 1 packet ids, until send_acks
        self._client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        url.configure(self._client)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._connected
        self._client.on_disconnect = self._disconnected
        self._client.on_subscribe = self._subscribed
        self._client.on_unsubscribe = self._unsubscribed
        self._client.on_message = self._message
        self._client.on_publish_fast = self._publish
        # Before paho can reconnect: no acknowledgement of ours crosses to the next connection.
        self._client.on_socket_closed = on_lost

    def will(self, topic: str, payload: bytes, delay: int) -> None:
        """What the broker publishes (QoS 0) if we go away without a clean DISCONNECT and do
        not come back within `delay` seconds (MQTT 5's will delay: a connection lost and
        found again in time sends nothing). Before `start`."""
        props = Properties(PacketTypes.WILLMESSAGE)  # type: ignore[no-untyped-call]
        props.WillDelayInterval = delay
        self._client.will_set(topic, payload, qos=0, properties=props)

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._session_expiry
        props.ReceiveMaximum = self._receive_maximum
        try:
            self._client.connect_async(
                self._url.host,
                self._url.port,
                keepalive=self._keepalive,
                clean_start=False,
                properties=props,
            )
        except (OSError, ValueError) as exc:
            raise BrokerError(f"cannot connect to {self._url.redacted()}: {exc}") from exc
        self._client.loop_start()

    def ack(self, mid: int, qos: int) -> None:
        self._client.ack(mid, qos)

    def queue_ack(self, mid: int, qos: int) -> None:
        """Acknowledge at the next `send_acks` (QoS 1; QoS 2 at once, through paho). Called by
        one thread only, the writer, as `send_acks` is."""
        if qos == 1:
            self._queued_acks.append(mid)
        else:
            self._client.ack(mid, qos)

    def send_acks(self) -> None:
        """Send the queued acknowledgements, in one write (send_packets)."""
        mids, self._queued_acks = self._queued_acks, []
        if mids:
            send_packets(self._client, pubacks(mids))

    def keep_alive(self) -> None:
        """On paho's network thread, while our own code holds it (ingest.budget: the byte
        budget spent): write what paho has queued, and ping the broker every half keepalive.

        Why: paho writes and pings only from its loop, which a held thread does not run. The
        broker drops a connection silent for 1.5 keepalives; paho's reconnection then discards
        its queue — the acknowledgements of the batches stored meanwhile — and the broker
        delivers those messages again: stored twice where they carry no timestamp
        (tests/integration/test_faults.py, test 15). The ping goes as raw bytes, not through
        paho, which would then wait for an answer it cannot read until the thread is free, and
        close the connection itself; the broker's answer is read later, and means nothing to
        paho but that the connection lives. Writing from inside paho's read is safe here: this
        is paho's own thread, and its write takes up where any partial write left off; a write
        that finds the connection gone closes it as paho's loop would (_Client.__init__), and
        paho reconnects once the thread is free. The interval is the keepalive the broker
        granted (its Server Keep Alive may be shorter than the one asked)."""
        now = time.monotonic()
        if now - self._pinged >= self._client.keepalive / 2:
            self._pinged = now
            send_packets(self._client, bytes((PINGREQ, 0)), PINGREQ)
        self._client.loop_write()

    def publish(self, topic: str, payload: bytes) -> None:
        """Fire and forget (QoS 0); used for the state feed, never for data."""
        self._client.publish(topic, payload, qos=0)

    def running(self) -> bool:
        """Whether paho's network thread (started by `start`) still runs: it ends on any
        exception but OSError, which nothing of ours would hear of (ingest.worker.check)."""
        thread = self._client._thread
        return thread is not None and thread.is_alive()

    def stop(self, *, end_session: bool = False) -> None:
        """Disconnect after the acknowledgements already queued (paho sends in order); with
        `end_session`, the broker discards our session (and subscription) at once."""
        props = None
        if end_session:
            props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0
        self._client.disconnect(properties=props)
        self._client.loop_stop()

    # --- paho callbacks (paho's network thread) --------------------------------------------

    def _connected(
        self,
        client: mqtt.Client,
        _ud: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        self.thread_id = threading.get_native_id()
        if reason.is_failure:
            # paho keeps retrying; wrong credentials are an operator's fix, so say it loudly.
            log.error("broker %s refused the connection: %s", self._url.redacted(), reason)
            return
        log.info(
            "connected to %s (session present: %s)", self._url.redacted(), flags.session_present
        )
        self._on_session(flags.session_present)
        if self._retire:
            result, _mid = client.unsubscribe(self._subscription)
        else:
            # Retained telemetry is sent only when the subscription is new, not again on every
            # resubscription: it was ingested when it was published, and without a timestamp it
            # would be stored again, under a new receive time, on every reconnect.
            options = SubscribeOptions(
                qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
            )
            result, _mid = client.subscribe(self._subscription, options=options)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.error("(un)subscribe %s failed: %s", self._subscription, result)

    def _subscribed(
        self,
        _c: mqtt.Client,
        _ud: Any,
        _mid: int,
        reasons: list[ReasonCode],
        _props: Properties | None,
    ) -> None:
        if any(r.is_failure for r in reasons):
            log.error("broker refused subscription %s: %s", self._subscription, reasons)
            return
        log.info("subscribed to %s", self._subscription)
        self.subscribed.set()

    def _unsubscribed(
        self,
        _c: mqtt.Client,
        _ud: Any,
        _mid: int,
        reasons: list[ReasonCode],
        _props: Properties | None,
    ) -> None:
        # "No subscription existed" is fine: the session had none left (or never had one).
        log.info(
            "unsubscribed from %s (%s): taking only what is queued", self._subscription, reasons
        )
        self.last_message = time.monotonic()
        self.unsubscribed.set()

    def _disconnected(
        self,
        _c: mqtt.Client,
        _ud: Any,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        self.subscribed.clear()
        if reason.is_failure:
            log.warning("disconnected from broker: %s; reconnecting", reason)

    def _publish(self, topic: bytes, payload: bytes, mid: int, qos: int, dup: bool) -> None:
        """The fast path (_Client): the same as `_message`, without paho's message object."""
        try:
            text = topic.decode()
        except UnicodeDecodeError:
            # MQTT requires UTF-8 topics; keep the message anyway, it becomes a bad_topic letter.
            text = topic.decode("utf-8", "replace")
        self.last_message = time.monotonic()
        self._on_received(Received(text, payload, mid, qos, self._clock(), dup))

    def _message(self, _c: mqtt.Client, _ud: Any, message: mqtt.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            # MQTT requires UTF-8 topics; keep the message anyway, it becomes a bad_topic letter.
            topic = message._topic.decode("utf-8", "replace")
        payload = bytes(message.payload)
        self.last_message = time.monotonic()
        self._on_received(
            Received(
                topic,
                payload,
                message.mid,
                message.qos,
                self._clock(),
                bool(message.dup),
                bool(message.retain),
            )
        )
