"""Benchmark publisher: replays a message file at QoS 1 as fast as the broker takes it.

Runs as its own process so its CPU use is not charged to the consumer being measured. The file
holds (topic, payload) pairs, each as two length-prefixed byte strings. Prints one JSON line
with the first-publish wall time and the count when every PUBACK is in.
"""

from __future__ import annotations

import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from common.mqtturl import MqttUrl

_LEN = struct.Struct("!I")


def write_messages(path: Path, messages: Iterator[tuple[str, bytes]]) -> int:
    n = 0
    with path.open("wb") as out:
        for topic, payload in messages:
            raw_topic = topic.encode()
            out.write(_LEN.pack(len(raw_topic)) + raw_topic + _LEN.pack(len(payload)) + payload)
            n += 1
    return n


def read_messages(path: Path) -> list[tuple[str, bytes]]:
    data = path.read_bytes()
    out: list[tuple[str, bytes]] = []
    pos = 0
    while pos < len(data):
        (size,) = _LEN.unpack_from(data, pos)
        topic = data[pos + 4 : pos + 4 + size].decode()
        pos += 4 + size
        (size,) = _LEN.unpack_from(data, pos)
        out.append((topic, data[pos + 4 : pos + 4 + size]))
        pos += 4 + size
    return out


def main() -> None:
    url, path = MqttUrl.parse(sys.argv[1]), Path(sys.argv[2])
    part, parts = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (0, 1)
    messages = read_messages(path)[part::parts]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{time.time_ns()}")
    client.username_pw_set(url.username, url.password)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(url.host, url.port)
    client.loop_start()
    # Start together: each publisher waits for the same wall-clock second.
    time.sleep(max(0.0, (int(time.time()) + 2) - time.time()))
    started = time.time()
    infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(timeout=600)
    done = time.time()
    client.disconnect()
    client.loop_stop()
    print(orjson.dumps({"started": started, "acked": done, "messages": len(infos)}).decode())


if __name__ == "__main__":
    main()
