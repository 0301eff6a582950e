"""Benchmark baseline: a bare paho subscriber that only counts, with the same MQTT settings as
ingest (MQTT 5, QoS 1, persistent session, same Receive Maximum) but acknowledging on receipt
and storing nothing.

    python -m bench.counter URL TOPIC EXPECTED CLIENT_ID

Prints `ready` once subscribed (with EXPECTED 0 it then leaves, its session kept for a backlog
run), then one JSON line with the wall times of the CONNACK and of the last message.
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


def main() -> None:
    url, topic, expected, client_id = (
        MqttUrl.parse(sys.argv[1]),
        sys.argv[2],
        int(sys.argv[3]),
        sys.argv[4],
    )
    done = threading.Event()
    subscribed = threading.Event()
    state = {"n": 0, "last": 0.0, "connected": 0.0}

    def on_message(_c: mqtt.Client, _u: Any, _m: mqtt.MQTTMessage) -> None:
        state["n"] += 1
        if state["n"] >= expected:
            state["last"] = time.time()
            done.set()

    def on_connect(*_args: Any) -> None:
        state["connected"] = time.time()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.username_pw_set(url.username, url.password)
    client.on_message = on_message
    client.on_connect = on_connect
    client.on_subscribe = lambda *_a: subscribed.set()
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.ReceiveMaximum = 20_000
    props.SessionExpiryInterval = 3600
    client.connect(url.host, url.port, clean_start=False, properties=props)
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
