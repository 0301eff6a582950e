"""Retained telemetry is ingested once, not again on every resubscription (issue 10): without a
timestamp it would be stored again under a new receive time each time ingest reconnects."""

from __future__ import annotations

import os
import time

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from citysense.servers import LocalServers
from common.influx import InfluxConfig
from common.mqtturl import MqttUrl
from tests.support.influx import count, rows
from tests.support.ingest import ingest_settings, running_worker
from tests.support.mqtt import publish
from tests.support.polling import wait_for
from tests.support.replay import replay
from wire.topics import TopicLayout

pytestmark = pytest.mark.integration

RETAINED = "retained_without_timestamp"


def retain(url: str, topic: str, payload: bytes) -> None:
    parsed = MqttUrl.parse(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(parsed.username, parsed.password)
    client.connect(parsed.host, parsed.port)
    client.loop_start()
    client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def test_retained_telemetry_is_stored_once_across_reconnects(
    servers: LocalServers, influx: InfluxConfig, topic_root: str
) -> None:
    layout = TopicLayout(topic_root)
    device = servers.mosquitto.url("citysense-simulator")
    settings = ingest_settings(servers, influx, topic_root)
    with running_worker(settings):  # the session and its subscription exist from here on
        # No timestamp: the streetlight profile stamps the receive time.
        retain(device, layout.telemetry("streetlight", "SL-000001"), b'{"powerState": "on"}')
        wait_for(lambda: count(influx, "streetlight") == 1, 30, what="the retained reading")
    for n in range(2):  # reconnect twice: each resubscribes
        with running_worker(settings):
            marker = orjson.dumps({"ts": time.time_ns() // 1_000_000, "pressure": 100.0 + n})
            publish(device, [(layout.telemetry("water_pipe", "WP-000001"), marker)])
            wait_for(lambda n=n: count(influx, "water_pipe") == n + 1, 30, what="the marker")
    assert count(influx, "streetlight") == 1
    # Not sent again at all (a copy sent again would now be a letter, not a second reading).
    assert rows(influx, "SELECT * FROM dead_letters.dead_letters") == []


def test_retained_telemetry_sent_to_a_new_session_is_stored_only_with_its_own_timestamp(
    servers: LocalServers, influx: InfluxConfig, topic_root: str
) -> None:
    """The broker sends its retained copies to a subscription that is new: ingest's, when the
    broker lost its session (a stale save, an expiry, a new client id). A copy without a
    timestamp was published at any time before: stamped with its receive time it would be
    stored as the device's newest reading; it is dead-lettered as retained_without_timestamp
    instead, which `citysense replay` leaves alone unless named, and refuses again if named.
    One with a timestamp is stored as it was."""
    layout = TopicLayout(topic_root)
    device = servers.mosquitto.url("citysense-simulator")
    retain(device, layout.telemetry("streetlight", "SL-000001"), b'{"powerState": "on"}')
    stamped = orjson.dumps({"ts": time.time_ns() // 1_000_000 - 60_000, "pressure": 101.5})
    retain(device, layout.telemetry("water_pipe", "WP-000001"), stamped)
    settings = ingest_settings(servers, influx, topic_root)  # a session the broker never had
    with running_worker(settings):
        wait_for(lambda: count(influx, "water_pipe") == 1, 30, what="the stamped retained copy")
        letters = f"SELECT * FROM dead_letters.dead_letters WHERE reason = '{RETAINED}'"
        wait_for(lambda: rows(influx, letters), 30, what="the unstamped copy, dead-lettered")
    assert count(influx, "streetlight") == 0
    (letter,) = rows(influx, letters)
    assert letter["device_id"] == "SL-000001" and "retained" in str(letter["detail"])
    # Replay leaves it alone unless named, and named, refuses it again: stamped when it was
    # received, it would become the lamp's newest reading all the same.
    env = {
        **os.environ,
        "CITYSENSE_INFLUX_URL": influx.url,
        "CITYSENSE_INFLUX_DB": influx.database,
        "CITYSENSE_TOPIC_ROOT": topic_root,
    }
    assert replay(env)["replayed"] == 0
    named = replay(env, "--reason", RETAINED)
    assert named["results"] == {"still rejected": 1}
    (marked,) = rows(influx, letters)
    assert marked["replay_result"] == f"still rejected: {RETAINED}"
    assert count(influx, "streetlight") == 0
