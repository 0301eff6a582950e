"""Security as shipped: broker credentials and ACL, and secrets that never reach a log."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr

from citysense.servers import LocalServers, free_port
from common.influx import InfluxConfig
from ingest.settings import IngestSettings
from ingest.worker import Worker
from tests.support.influx import count, make_database, rows
from tests.support.mqtt import publish, subscriber
from tests.support.polling import wait_for
from tests.support.servers import local_servers
from wire.topics import TopicLayout

pytestmark = pytest.mark.integration

DEVICE = "SL-000001"
DEVICE_PASSWORD = secrets.token_urlsafe(12)


@pytest.fixture
def stack_with_device(tmp_path: Path) -> Iterator[LocalServers]:
    """Servers whose broker also knows one device by its own credentials."""
    with local_servers(tmp_path / "servers", {DEVICE: DEVICE_PASSWORD}) as stack:
        yield stack


def device_url(stack: LocalServers) -> str:
    return f"mqtt://{DEVICE}:{DEVICE_PASSWORD}@{stack.mosquitto.host}:{stack.mosquitto.port}"


def test_a_device_can_publish_only_as_itself(
    stack_with_device: LocalServers, topic_root: str
) -> None:
    influx = make_database(stack_with_device)
    settings = IngestSettings(
        mqtt_url=SecretStr(stack_with_device.mosquitto.url("citysense-ingest")),
        influx_url=influx.url,
        influx_db=influx.database,
        topic_root=topic_root,
        client_id=f"sec-{secrets.token_hex(3)}",
        http_port=0,
        flush_interval=0.05,
        spool_dir=None,
    )
    profiles, registry = settings.load_contract()
    worker = Worker(settings, profiles, registry)
    worker.start()
    try:
        wait_for(worker.consumer.subscribed.is_set, 10, what="subscription")
        layout = TopicLayout(topic_root)
        t = time.time_ns() // 1_000_000
        forged = (
            layout.telemetry("streetlight", "SL-000002"),
            orjson.dumps({"ts": t, "powerState": "on"}),
        )
        own = (layout.telemetry("streetlight", DEVICE), orjson.dumps({"ts": t, "powerState": "on"}))
        # The broker acknowledges the forged publish but, by the ACL, delivers it to no one.
        publish(device_url(stack_with_device), [forged, own])
        wait_for(lambda: count(influx, "streetlight") >= 1, 10, what="the device's own reading")
        time.sleep(0.3)
        stored = rows(influx, 'SELECT powerState, device_id FROM "streetlight"')
        assert [r["device_id"] for r in stored] == [DEVICE]
        assert count(influx, "dead_letters") == 0
    finally:
        worker.stop()


def test_nobody_but_ingest_can_write_the_state_feed(
    stack_with_device: LocalServers, topic_root: str
) -> None:
    heard: list[bytes] = []
    listener = subscriber(
        stack_with_device.mosquitto.url("citysense-api"), f"{topic_root}/_ingested/+", heard.append
    )
    try:
        fake = (f"{topic_root}/_ingested/forger", b'{"readings": []}')
        publish(stack_with_device.mosquitto.url("citysense-simulator"), [fake])
        publish(device_url(stack_with_device), [fake])
        publish(
            stack_with_device.mosquitto.url("citysense-ingest"),
            [(f"{topic_root}/_ingested/citysense-ingest", b'{"readings": []}')],
        )
        wait_for(lambda: heard, 10, what="ingest's own announcement")
        time.sleep(0.3)
        assert heard == [b'{"readings": []}']
    finally:
        listener.disconnect()
        listener.loop_stop()


@pytest.mark.parametrize("credentials", [None, ("citysense-ingest", "wrong-password")])
def test_broker_refuses_anonymous_and_wrong_passwords(
    servers: LocalServers, credentials: tuple[str, str] | None
) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{secrets.token_hex(3)}")
    if credentials:
        client.username_pw_set(*credentials)
    result: list[object] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: result.append(reason)
    client.connect(servers.mosquitto.host, servers.mosquitto.port)
    client.loop_start()
    try:
        wait_for(lambda: result, 10, what="CONNACK")
    finally:
        client.loop_stop()
    assert getattr(result[0], "is_failure", False)


def test_secrets_never_reach_the_logs(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, tmp_path: Path
) -> None:
    mqtt_url = servers.mosquitto.url("citysense-ingest")
    password = servers.mosquitto.passwords["citysense-ingest"]
    token = "influx-token-" + secrets.token_hex(8)
    env = {
        **os.environ,
        "CITYSENSE_MQTT_URL": mqtt_url,
        "CITYSENSE_INFLUX_URL": influx.url,
        "CITYSENSE_INFLUX_DB": influx.database,
        "CITYSENSE_INFLUX_TOKEN": token,
        "CITYSENSE_TOPIC_ROOT": topic_root,
        "CITYSENSE_HTTP_PORT": str(free_port()),
        "CITYSENSE_LOG_LEVEL": "DEBUG",
        "CITYSENSE_SPOOL_DIR": str(tmp_path / "spool"),
    }
    log = tmp_path / "ingest.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "citysense.cli", "ingest"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "subscribed" in log.read_text(), 20, what="subscription log line")
        layout = TopicLayout(topic_root)
        publish(
            servers.mosquitto.url("citysense-simulator"),
            [(layout.telemetry("streetlight", "SL-000001"), b"{broken")],
        )
        wait_for(lambda: count(influx, "dead_letters") == 1, 10, what="dead letter")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    # a settings error must not quote the URL either
    bad = subprocess.run(
        [sys.executable, "-m", "citysense.cli", "ingest"],
        env={**env, "CITYSENSE_MQTT_URL": mqtt_url.replace("mqtt://", "tcp://")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    text = log.read_text() + bad.stdout + bad.stderr
    assert "subscribed" in text  # the log is really there, and verbose (DEBUG)
    assert password not in text
    assert token not in text
