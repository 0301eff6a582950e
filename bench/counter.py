"""Benchmark baseline: a bare paho subscriber that only counts, with the same MQTT settings as
ingest (MQTT 5, QoS 1, same Receive Maximum) but acknowledging on receipt and storing nothing.

Prints `ready` once subscribed, then one JSON line with the wall time of the last message.
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

from citysense.mqtturl import MqttUrl


def main() -> None:
    url, topic, expected = MqttUrl.parse(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    done = threading.Event()
    subscribed = threading.Event()
    state = {"n": 0, "last": 0.0}

    def on_message(_c: mqtt.Client, _u: Any, _m: mqtt.MQTTMessage) -> None:
        state["n"] += 1
        if state["n"] >= expected:
            state["last"] = time.time()
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-count-{time.time_ns()}",
                         protocol=mqtt.MQTTv5)
    client.username_pw_set(url.username, url.password)
    client.on_message = on_message
    client.on_subscribe = lambda *_a: subscribed.set()
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.ReceiveMaximum = 20_000
    client.connect(url.host, url.port, properties=props)
    client.subscribe(topic, qos=1)
    client.loop_start()
    subscribed.wait(10)
    print("ready", flush=True)
    done.wait(600)
    client.loop_stop()
    print(orjson.dumps({"last": state["last"], "messages": state["n"]}).decode(), flush=True)


if __name__ == "__main__":
    main()
