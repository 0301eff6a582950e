"""ingest.consume's own PUBLISH decoding (the MQTT 5 fast path) against paho's decoder: the same
topic, payload, packet id and QoS for every packet it takes, and every packet it cannot take
(properties, QoS 2, malformed) left to paho."""

from __future__ import annotations

import socket
import struct
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt import _packet
from paho.mqtt.client import MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.consume import _Client, decode_publish, pubacks, send_packets

PUBLISH = 0x30


def _packet_of(topic: bytes, payload: bytes, mid: int, qos: int, props: bytes = b"\x00") -> bytes:
    head = struct.pack("!H", len(topic)) + topic
    if qos:
        head += struct.pack("!H", mid)
    return head + props + payload


def _expiry() -> bytes:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.MessageExpiryInterval = 60
    packed: bytes = props.pack()  # type: ignore[no-untyped-call]
    return packed


@given(
    topic=st.text(min_size=1, max_size=80).map(str.encode),
    payload=st.binary(max_size=300),
    mid=st.integers(1, 65535),
    qos=st.sampled_from([0, 1]),
    dup=st.booleans(),
)
def test_the_same_as_paho_for_every_packet_it_takes(
    topic: bytes, payload: bytes, mid: int, qos: int, dup: bool
) -> None:
    packet = bytearray(_packet_of(topic, payload, mid, qos))
    command = PUBLISH | (qos << 1) | (dup << 3)
    paho = _packet.decode_publish(command, packet, MQTTProtocolVersion.MQTTv5)
    assert decode_publish(command, packet) == (
        paho.topic,
        paho.payload,
        paho.mid if qos else 0,
        paho.qos,
        paho.dup,
    )


@pytest.mark.parametrize(
    ("command", "packet"),
    [
        (PUBLISH | 2, _packet_of(b"a/b", b"{}", 7, 1, _expiry())),  # properties: paho's
        (PUBLISH | 4, _packet_of(b"a/b", b"{}", 7, 2)),  # QoS 2: paho's
        (PUBLISH | 6, _packet_of(b"a/b", b"{}", 7, 3)),  # QoS 3 does not exist
        (PUBLISH | 2, _packet_of(b"", b"{}", 7, 1)),  # no topic
        (PUBLISH | 2, _packet_of(b"a/b", b"{}", 0, 1)),  # packet id 0
        (PUBLISH | 2, b"\x00\x03a/b\x00"),  # cut short
        (PUBLISH, b"\x00"),
    ],
)
def test_anything_else_is_left_to_paho(command: int, packet: bytes) -> None:
    assert decode_publish(command, bytearray(packet)) is None


def _client_with(packet: bytes, command: int) -> tuple[_Client, list[Any], list[Any]]:
    client = _Client(
        CallbackAPIVersion.VERSION2, client_id="t", protocol=5, manual_ack=True
    )  # never connected: the handler is fed one packet by hand
    fast: list[Any] = []
    slow: list[Any] = []
    client.on_publish_fast = lambda *args: fast.append(args)

    def on_message(_c: Any, _u: Any, message: MQTTMessage) -> None:
        slow.append((message.topic, message.payload, message.mid))

    client.on_message = on_message
    client._in_packet["command"] = command
    client._in_packet["packet"] = bytearray(packet)
    client._handle_publish()
    return client, fast, slow


def test_the_client_takes_the_fast_path_and_falls_back_to_paho() -> None:
    _, fast, slow = _client_with(_packet_of(b"c/sl/1/telemetry", b'{"a":1}', 9, 1), PUBLISH | 2)
    assert fast == [(b"c/sl/1/telemetry", b'{"a":1}', 9, 1, False)]
    assert slow == []
    _, fast, slow = _client_with(
        _packet_of(b"c/sl/1/telemetry", b'{"a":1}', 9, 1, _expiry()), PUBLISH | 2
    )
    assert fast == []
    assert slow == [("c/sl/1/telemetry", b'{"a":1}', 9)]


def test_acknowledgements_are_the_packets_paho_would_send_in_one_write() -> None:
    ours, theirs = (
        _Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=5, manual_ack=True)
        for name in ("ours", "theirs")
    )
    mids = [1, 4242, 65535]
    send_packets(ours, pubacks(mids))
    for mid in mids:
        theirs.ack(mid, 1)
    assert len(ours._out_packet) == 1
    assert ours._out_packet[0]["packet"] == b"".join(p["packet"] for p in theirs._out_packet)
    assert ours._out_packet[0]["packet"][4:8] == b"\x40\x02\x10\x92"


def _wire(topic: bytes, payload: bytes, mid: int) -> bytes:
    """A whole MQTT 5 PUBLISH (QoS 1) as it crosses the socket: fixed header and all."""
    body = _packet_of(topic, payload, mid, 1)
    length, size = b"", len(body)
    while True:
        size, digit = divmod(size, 128)
        length += bytes([digit | (0x80 if size else 0)])
        if not size:
            return bytes([PUBLISH | 2]) + length + body


def test_buffered_reads_deliver_every_packet_whole_however_the_bytes_arrive() -> None:
    client = _Client(CallbackAPIVersion.VERSION2, client_id="t", protocol=5, manual_ack=True)
    got: list[Any] = []
    client.on_publish_fast = lambda *args: got.append(args)
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours
    packets = [_wire(b"c/p/%d/telemetry" % n, b"x" * (n * 25_000), n + 1) for n in range(4)]
    stream = b"".join(packets)
    try:
        cut = len(packets[0]) + len(packets[1]) + 7  # the third packet cut after 7 bytes
        broker.sendall(stream[:cut])
        client.loop_read()
        assert [m for _, _, m, _, _ in got] == [1, 2]
        broker.sendall(stream[cut:])
        for _ in range(20):  # the rest, up to RECV_CHUNK a recv, whatever the kernel hands over
            client.loop_read()
        assert [(t, len(p), m) for t, p, m, _, _ in got] == [
            (b"c/p/%d/telemetry" % n, n * 25_000, n + 1) for n in range(4)
        ]
        broker.close()
        assert client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS  # the end reaches paho
    finally:
        ours.close()


def test_a_write_from_inside_paho_s_on_message_that_finds_the_connection_gone_returns() -> None:
    """Consumer.keep_alive writes from inside on_message, which paho's own path calls holding
    its callback lock; a write that finds the peer gone calls on_disconnect under that same
    lock. It must close the connection and return, not wait on itself for ever."""
    client = _Client(CallbackAPIVersion.VERSION2, client_id="t", protocol=5, manual_ack=True)
    disconnected: list[Any] = []
    client.on_disconnect = lambda *args: disconnected.append(args)
    ours, broker = socket.socketpair()
    client._sock = ours
    broker.close()
    send_packets(client, pubacks([1]) * 10_000)  # more than one send() into a closed peer

    def inside_on_message() -> None:
        with client._in_callback_mutex:  # as paho's _handle_on_message holds it
            client.loop_write()

    thread = threading.Thread(target=inside_on_message, daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "the network thread waits on itself"
    assert len(disconnected) == 1 and client._sock is None


def test_a_retained_publish_is_left_to_paho_which_reads_its_flag() -> None:
    """Sent only to a new subscription, a retained copy must reach ingest as one (ingest.pipeline
    refuses it without a timestamp): the fast decoder drops the flag, so it declines it."""
    body = b"\x00\x01t" + b"\x00" + b"{}"  # topic "t", no properties, the payload
    assert decode_publish(0x30, body) == (b"t", b"{}", 0, 0, False)
    assert decode_publish(0x31, body) is None


def test_every_lost_connection_is_told_before_paho_can_reconnect() -> None:
    """Ingest's acknowledgements must not cross to the next connection (ingest.acks): the
    socket's close tells, on every path (a write into a closed peer here; paho's own loop and
    its reconnect close the same way), once per connection."""
    client = _Client(CallbackAPIVersion.VERSION2, client_id="t", protocol=5, manual_ack=True)
    lost: list[int] = []
    client.on_socket_closed = lambda: lost.append(1)
    ours, broker = socket.socketpair()
    client._sock = ours
    broker.close()
    send_packets(client, pubacks([1]) * 10_000)
    client.loop_write()
    assert client._sock is None and lost == [1]
    client._sock_close()  # paho's reconnect closes again: nothing more to tell
    assert lost == [1]
