"""Scaling down a shared subscription without losing what the broker queued for the slot that
goes: `citysense ingest --retire` stores that queue, then ends the session, after which the
broker deals every new message to the workers that remain."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from citysense.servers import LocalServers, free_port
from common.influx import InfluxConfig
from common.mqtturl import MqttUrl
from tests.support.faults import assert_exactly, stream_of, wait_stored
from tests.support.mqtt import publish
from tests.support.polling import wait_for
from tests.support.processes import IngestProcess, ingest_env

pytestmark = pytest.mark.integration


def test_retiring_a_slot_stores_its_queue_and_ends_its_session(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, tmp_path: Path
) -> None:
    group = f"g{secrets.token_hex(3)}"
    env = ingest_env(servers, influx, topic_root, tmp_path)
    url = servers.mosquitto.url("citysense-simulator")

    def worker(slot: str, *args: str) -> IngestProcess:
        own = {**env, "CITYSENSE_HTTP_PORT": str(free_port())}
        return IngestProcess(
            own,
            tmp_path / f"{slot}.log",
            "--client-id",
            f"{group}-{slot}",
            "--share-group",
            group,
            *args,
        )

    staying, leaving = worker("a"), worker("b")
    staying.start()
    leaving.start()
    assert leaving.terminate() == 0  # drained: it holds nothing, but its session stays

    messages, expected = stream_of(topic_root, 4000, per_message=5)
    first, later = messages[:400], messages[400:]
    publish(url, first)
    # The broker deals about half of them to the stopped member's session, where they wait;
    # the member that stays stores its share.
    wait_for(lambda: staying.metric("messages_acked_total") > 0, 30, what="the staying share")

    retire = worker("b", "--retire", "--retire-idle", "2")
    retire.start(wait_ready=False)
    assert retire.proc is not None
    try:
        assert retire.proc.wait(60) == 0, retire.log.read_text()[-3000:]
    except subprocess.TimeoutExpired:
        pytest.fail(f"--retire did not finish:\n{retire.log.read_text()[-3000:]}")
    wait_stored(influx, 400 * 5, 30)
    # What the staying member did not take waited for the stopped one, and retiring stored it.
    stranded = len(first) - staying.metric("received_total")
    assert stranded > 0, "the broker dealt nothing to the stopped member: nothing to retire"
    assert not session_present(env["CITYSENSE_MQTT_URL"], f"{group}-b"), "session not ended"

    # Its session is gone: everything published from now on reaches the worker that stays.
    publish(url, later)
    wait_stored(influx, len(expected), 60)
    assert_exactly(influx, expected)
    assert staying.terminate() == 0


def session_present(url: str, client_id: str) -> bool:
    """Whether the broker still holds a session for `client_id` (connecting without a clean
    start, and leaving the session as it was found: expiry unchanged by a clean disconnect)."""
    parsed = MqttUrl.parse(url)
    flags: list[bool] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.username_pw_set(parsed.username, parsed.password)
    client.on_connect = lambda _c, _u, f, _r, _p: flags.append(f.session_present)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 0
    client.connect(parsed.host, parsed.port, clean_start=False, properties=props)
    client.loop_start()
    wait_for(lambda: flags, 10, 0.05, "CONNACK")
    client.disconnect()
    client.loop_stop()
    return flags[0]
