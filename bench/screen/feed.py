"""Readings announced on the state feed at a steady rate, as ingest announces what it stored
(wire.statefeed): the load the screen follows, without the cost of MQTT ingest on this machine's
two cores (bench.api_bench measures that path)."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from common.mqtturl import MqttUrl
from wire import statefeed

TICK = 0.05  # a feed message every 50 ms, as ingest's batches come
VALUES = {
    "streetlight": lambda r: {"powerState": "on", "powerConsumption": r.uniform(40, 120)},
    "water_pipe": lambda r: {"pressure": r.uniform(250, 450), "flow": r.uniform(0, 30)},
    "power_meter": lambda r: {"activePower": r.uniform(1, 80), "voltageL1": r.uniform(225, 235)},
}


@dataclass(frozen=True, slots=True)
class Reading:
    measurement: str
    device_id: str
    district: str
    time_ns: int
    fields: dict[str, object]


@dataclass
class FeedLoad:
    """Publishes `rate` readings/s of random devices for `seconds` in a thread."""

    url: str
    topic: str
    devices: list[tuple[str, str, str]]  # profile, device id, district
    rate: float
    seconds: float
    sent: int = 0
    thread: threading.Thread = field(init=False)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.thread.join()

    def _run(self) -> None:
        parsed = MqttUrl.parse(self.url)
        client = mqtt.Client(CallbackAPIVersion.VERSION2)
        client.username_pw_set(parsed.username, parsed.password)
        client.connect(parsed.host, parsed.port)
        client.loop_start()
        rng = random.Random(3)  # a load, not security
        started = time.monotonic()
        ticks = round(self.seconds / TICK)
        per_tick = self.rate * TICK
        for n in range(ticks):
            due = started + n * TICK
            time.sleep(max(0.0, due - time.monotonic()))
            count = round(per_tick * (n + 1)) - round(per_tick * n)
            batch = [self._reading(rng) for _ in range(count)]
            for message in statefeed.encode(batch):
                client.publish(self.topic, message, qos=0)
            self.sent += count
        client.disconnect()
        client.loop_stop()

    def _reading(self, rng: random.Random) -> Reading:
        profile, device_id, district = rng.choice(self.devices)
        return Reading(profile, device_id, district, time.time_ns(), VALUES[profile](rng))
