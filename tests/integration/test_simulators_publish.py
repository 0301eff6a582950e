"""The simulator's publisher against the real Mosquitto: everything published arrives, once
acknowledged; refusals by the broker come back as BrokerError."""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import paho.mqtt.client as mqtt
import pytest

from citysense.servers import LocalServers
from common.errors import BrokerError
from common.mqtturl import MqttUrl
from device_profiles import DEFAULT_REGISTRY, load_profiles, load_registry
from simulators import cli
from simulators.fleet import generate
from simulators.publish import Publisher, publish
from tests.support.mqtt import publish as send
from tests.support.mqtt import subscriber
from tests.support.polling import wait_for
from wire.topics import TopicLayout

pytestmark = pytest.mark.integration

PROFILES = load_profiles()
DEVICES = list(load_registry(DEFAULT_REGISTRY, PROFILES).devices.values())


def listen(servers: LocalServers, root: str) -> tuple[list[bytes], mqtt.Client]:
    received: list[bytes] = []
    client = subscriber(
        servers.mosquitto.url("citysense-ingest"), f"{root}/+/+/telemetry", received.append
    )
    return received, client


def test_every_published_message_arrives(servers: LocalServers, topic_root: str) -> None:
    received, client = listen(servers, topic_root)
    messages = list(
        generate(DEVICES[::10], PROFILES, TopicLayout(topic_root), readings_per_device=10,
                 array_ratio=0.2, fault_ratio=0.05)
    )  # fmt: skip
    assert 1800 < len(messages) < 2500
    url = MqttUrl.parse(servers.mosquitto.url("citysense-simulator"))
    report = publish(url, messages, progress=True)
    try:
        wait_for(lambda: len(received) >= len(messages), 30, what="every message")
        # A marker published once every message above was acknowledged reaches the subscriber
        # after them: a copy delivered twice would have come before it.
        topic = messages[0].topic
        send(servers.mosquitto.url("citysense-simulator"), [(topic, b"marker")])
        wait_for(lambda: b"marker" in received, 10, what="the marker")
        assert received[-1] == b"marker"
        assert Counter(received[:-1]) == Counter(m.payload for m in messages)
    finally:
        client.disconnect()
    assert report.messages == len(messages)
    assert report.valid_readings == sum(len(m.readings) for m in messages)
    assert report.bad_messages_by_reason == dict(Counter(r for m in messages for r in m.rejections))
    assert report.duplicates == sum(m.fault == "duplicate" for m in messages)
    assert report.rate > 0 and not report.interrupted


def test_rate_limit_and_duration_are_kept(servers: LocalServers, topic_root: str) -> None:
    messages = generate(DEVICES[:30], PROFILES, TopicLayout(topic_root), readings_per_device=100)
    url = MqttUrl.parse(servers.mosquitto.url("citysense-simulator"))
    report = publish(url, messages, rate=200, duration=1.5)
    # The cap allows at most rate x duration messages, however fast the machine; the run ended
    # by its duration, long before the 3,000 messages ran out. (How close to the cap a run
    # comes and how long it takes: python -m bench.timings.)
    assert 0 < report.messages <= 320
    assert not report.interrupted


def test_live_messages_go_out_when_due(servers: LocalServers, topic_root: str) -> None:
    received: list[tuple[float, bytes]] = []
    client = subscriber(
        servers.mosquitto.url("citysense-ingest"),
        f"{topic_root}/+/+/telemetry",
        lambda payload: received.append((time.time(), payload)),
    )
    messages = generate(DEVICES[:9], PROFILES, TopicLayout(topic_root), readings_per_device=0,
                        time_mode="live", interval_s=1, array_ratio=0)  # fmt: skip
    url = MqttUrl.parse(servers.mosquitto.url("citysense-simulator"))
    try:
        report = publish(url, messages, pace=True, duration=2.5)
        wait_for(lambda: len(received) >= report.messages, 10, what="the live messages")
    finally:
        client.disconnect()
    assert 9 <= report.messages <= 30  # each device's first reading, then one a second
    stamps = 0
    for arrived, payload in received:
        ts = json.loads(payload)["ts"]
        if isinstance(ts, int):
            stamps += 1
            due = ts if ts < 10**11 else ts / 1000
            # stamped when due and held until then: never out before it, but for a second's
            # rounding of the stamp (how late it arrives: python -m bench.timings)
            assert arrived > due - 1
    assert stamps, "no message with a numeric timestamp: nothing checked"


def test_a_wrong_password_is_a_broker_error(servers: LocalServers) -> None:
    good = MqttUrl.parse(servers.mosquitto.url("citysense-simulator"))
    wrong = MqttUrl(good.host, good.port, good.username, "not-the-password")
    with pytest.raises(BrokerError, match="refused the connection"), Publisher(wrong):
        pass


def test_an_unreachable_broker_is_a_broker_error() -> None:
    with pytest.raises(BrokerError, match="cannot reach"), Publisher(MqttUrl("127.0.0.1", 1)):
        pass


def test_a_topic_the_acl_denies_is_a_broker_error(servers: LocalServers) -> None:
    messages = generate(DEVICES[:3], PROFILES, TopicLayout("not-allowed"), readings_per_device=2)
    url = MqttUrl.parse(servers.mosquitto.url("citysense-simulator"))
    with pytest.raises(BrokerError, match="Not authorized"):
        publish(url, messages)


def test_the_cli_publishes_and_summarises(
    servers: LocalServers,
    topic_root: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    received, client = listen(servers, topic_root)
    monkeypatch.setenv("CITYSENSE_MQTT_URL", servers.mosquitto.url("citysense-simulator"))
    monkeypatch.setenv("CITYSENSE_TOPIC_ROOT", topic_root)
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    argv = ["--devices", "50", "--readings-per-device", "4", "--fault-ratio", "0.1"]
    try:
        assert cli.main(parser.parse_args(argv)) == 0
        summary = json.loads(capsys.readouterr().out)
        wait_for(lambda: len(received) >= summary["messages"], 30, what="the CLI's messages")
    finally:
        client.disconnect()
    assert summary["devices"] == 50
    assert summary["devices_by_profile"] == {"streetlight": 30, "water_pipe": 10, "power_meter": 10}
    assert summary["messages"] == len(received)
    assert "***" in summary["broker"] and "citysense-simulator" in summary["broker"]
