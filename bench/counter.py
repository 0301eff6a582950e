"""Benchmark baseline: a bare paho subscriber that only counts, on the same broker and account as
ingest (QoS 1, persistent session) but acknowledging on receipt and storing nothing.

    python -m bench.counter URL TOPIC EXPECTED CLIENT_ID [PROTOCOL]

PROTOCOL is `5` (default: MQTT 5, Receive Maximum 20,000 like ingest, session expiry 1 h) or
`3.1.1` (clean session off; the broker's max_inflight_messages bounds what is in flight). paho's
cost per message differs between the two, so the benchmark measures both and takes the faster.

Prints `ready` once subscribed (with EXPECTED 0 it then leaves, its session kept for a backlog
run), then one JSON line with the wall times of the CONNACK and of the last message, and its CPU
time at each.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from common.mqtturl import MqttUrl

PROTOCOLS = {"3.1.1": mqtt.MQTTv311, "5": mqtt.MQTTv5}


def _connect(client: mqtt.Client, url: MqttUrl, protocol: int) -> None:
    if protocol == mqtt.MQTTv5:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.ReceiveMaximum = 20_000
        props.SessionExpiryInterval = 3600
        client.connect(url.host, url.port, clean_start=False, properties=props)
    else:
        client.connect(url.host, url.port)


def main() -> None:
    url, topic, expected, client_id = (
        MqttUrl.parse(sys.argv[1]),
        sys.argv[2],
        int(sys.argv[3]),
        sys.argv[4],
    )
    protocol = PROTOCOLS[sys.argv[5] if len(sys.argv) > 5 else "5"]
    done = threading.Event()
    subscribed = threading.Event()
    # Wall times of the CONNACK and the last message, and this process's CPU time at each.
    state = {"n": 0, "last": 0.0, "connected": 0.0, "cpu_connected": 0.0, "cpu_last": 0.0}

    def on_message(_c: mqtt.Client, _u: Any, _m: mqtt.MQTTMessage) -> None:
        state["n"] += 1
        if state["n"] >= expected:
            state["last"] = time.time()
            state["cpu_last"] = time.process_time()
            done.set()

    def on_connect(*_args: Any) -> None:
        state["connected"] = time.time()
        state["cpu_connected"] = time.process_time()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        # MQTT 3.1.1 has no session expiry: clean_session off keeps the session.
        clean_session=False if protocol != mqtt.MQTTv5 else None,
    )
    client.username_pw_set(url.username, url.password)
    client.on_message = on_message
    client.on_connect = on_connect
    client.on_subscribe = lambda *_a: subscribed.set()
    _connect(client, url, protocol)
    client.subscribe(topic, qos=1)
    client.loop_start()
    subscribed.wait(10)
    print("ready", flush=True)
    if expected:
        done.wait(600)
    client.disconnect()
    client.loop_stop()
    print(orjson.dumps({**state, "messages": state["n"]}).decode(), flush=True)


if __name__ == "__main__":
    main()
