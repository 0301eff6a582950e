"""Device credentials end to end: `citysense devices` (the real command) against a broker
rendered by citysense.broker, the renderer the compose stack's `mosquitto` service runs, with
its TLS listener and the dynamic-security plugin; ingest storing what an added device sent."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from api.live.broker import check_broker
from citysense import dynsec
from citysense.servers import LocalServers
from common.mqtturl import MqttUrl
from ingest.worker import Worker
from tests.support.influx import make_database, rows
from tests.support.ingest import ingest_settings, running_worker
from tests.support.mqtt import listen, publish_v5
from tests.support.polling import wait_for
from tests.support.seeding import write_registry
from wire.topics import TopicLayout

pytestmark = pytest.mark.integration

NOT_AUTHORIZED = 0x87
ADD = ["SL-900001", "--profile", "streetlight", "--district", "Xihu", "--lat", "30.25"]
ADD += ["--lon", "120.15", "--address", "1 New Rd"]


def devices(
    stack: LocalServers, registry: Path, root: str, *args: str, fails: bool = False
) -> dict[str, str]:
    """Run `citysense devices ARGS`; the secrets it printed, by device id (with `fails`, the
    command must fail: what it said on stderr, as "error")."""
    env = {
        **os.environ,
        "CITYSENSE_MQTT_ADMIN_URL": stack.mosquitto.tls_url("citysense-admin"),
        "CITYSENSE_REGISTRY": str(registry),
        "CITYSENSE_TOPIC_ROOT": root,
    }
    done = subprocess.run(
        [sys.executable, "-m", "citysense.cli", "devices", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if fails:
        assert done.returncode != 0, done.stdout
        return {"error": done.stderr, "output": done.stdout}
    assert done.returncode == 0, done.stderr
    if args[0] in ("revoke", "list"):
        return {"output": done.stdout}
    return {r["device_id"]: r["secret"] for r in csv.DictReader(io.StringIO(done.stdout))}


def reading(value: float) -> bytes:
    return orjson.dumps(
        {"ts": int(time.time() * 1000), "powerState": "on", "powerConsumption": value}
    )


class Connected:
    """A device's open TLS connection, and whether the broker closed it."""

    def __init__(self, url: str) -> None:
        parsed = MqttUrl.parse(url)
        self.closed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        parsed.configure(self.client)
        self.client.on_disconnect = lambda *_: self.closed.set()
        self.client.connect(parsed.host, parsed.port)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_an_added_device_publishes_over_tls_and_a_running_ingest_stores_it(
    private_servers: LocalServers, topic_root: str, tmp_path: Path
) -> None:
    stack, layout = private_servers, TopicLayout(topic_root)
    registry = write_registry(tmp_path / "registry.csv")
    influx = make_database(stack)
    # Ingest runs before the device exists: it picks the new registry row up by itself.
    settings = ingest_settings(stack, influx, topic_root, registry=registry, registry_check=0.2)
    with running_worker(settings) as worker:
        secret = devices(stack, registry, topic_root, "add", *ADD)["SL-900001"]
        assert "SL-900001,streetlight,Xihu,30.25,120.15,1 New Rd" in registry.read_text()
        wait_for(lambda: _knows(worker, "SL-900001"), 10, what="ingest reloading the registry")
        url = stack.mosquitto.tls_url("SL-900001", secret)
        own = layout.telemetry("streetlight", "SL-900001")
        assert not publish_v5(url, own, reading(42)).is_failure
        # Another device's topic, or its own id under another profile: refused by the broker.
        for topic in (
            layout.telemetry("streetlight", "SL-000001"),
            layout.telemetry("water_pipe", "SL-900001"),
        ):
            assert publish_v5(url, topic, reading(2)).value == NOT_AUTHORIZED, topic
        query = "SELECT powerConsumption FROM streetlight WHERE device_id = 'SL-900001'"
        wait_for(lambda: rows(influx, query), 20, what="the added device's reading")
    assert [r["powerConsumption"] for r in rows(influx, query)] == [42.0]
    # The certificate is checked: against the system's trust store alone, ours is unknown.
    untrusted = url.split("?")[0]
    assert "CERTIFICATE_VERIFY_FAILED" in (check_broker(MqttUrl.parse(untrusted), 5) or "")


def _knows(worker: Worker, device_id: str) -> bool:
    return worker.pipeline.registry.get(device_id) is not None


def test_revoke_and_rotate_take_effect_without_a_broker_restart(
    private_servers: LocalServers, topic_root: str, tmp_path: Path
) -> None:
    stack = private_servers
    registry = write_registry(tmp_path / "registry.csv")
    broker_pid = stack.mosquitto.process.pid if stack.mosquitto.process else None
    first = devices(stack, registry, topic_root, "add", *ADD)["SL-900001"]
    rotated = devices(stack, registry, topic_root, "rotate", "SL-900001")["SL-900001"]
    assert rotated != first
    assert "refused" in (
        check_broker(MqttUrl.parse(stack.mosquitto.tls_url("SL-900001", first)), 5) or ""
    )
    url = stack.mosquitto.tls_url("SL-900001", rotated)
    assert check_broker(MqttUrl.parse(url), 5) is None
    connected = Connected(url)
    try:
        wait_for(connected.client.is_connected, 10, what="the device connected")
        devices(stack, registry, topic_root, "revoke", "SL-900001")
        wait_for(connected.closed.is_set, 10, what="the broker closing the revoked connection")
    finally:
        connected.stop()
    assert "refused" in (check_broker(MqttUrl.parse(url), 5) or "")
    assert stack.mosquitto.process is not None and stack.mosquitto.process.pid == broker_pid
    listed = devices(stack, registry, topic_root, "list")["output"]
    assert "SL-900001,streetlight,Xihu,none" in listed  # registry row kept, account gone


def test_imported_devices_survive_a_broker_restart(
    private_servers: LocalServers, topic_root: str, tmp_path: Path
) -> None:
    stack, layout = private_servers, TopicLayout(topic_root)
    registry = write_registry(tmp_path / "registry.csv")
    batch = tmp_path / "new.csv"
    batch.write_text(
        "device_id,profile,district,latitude,longitude,address\n"
        + "".join(f"WP-9{n:05d},water_pipe,Gongshu,30.3,120.1,{n} Pipe St\n" for n in range(50))
    )
    secrets_by_id = devices(stack, registry, topic_root, "import", str(batch))
    assert len(secrets_by_id) == 50 and len(set(secrets_by_id.values())) == 50
    stack.mosquitto.restart()  # the accounts file is rendered again: operator's devices kept
    heard, listener = listen(stack.mosquitto.url("citysense-api"), [layout.subscription])
    try:
        for device_id in ("WP-900000", "WP-900049"):
            url = stack.mosquitto.tls_url(device_id, secrets_by_id[device_id])
            topic = layout.telemetry("water_pipe", device_id)
            assert not publish_v5(url, topic, b"{}").is_failure
        wait_for(lambda: len(heard) == 2, 10, what="both devices' messages")
    finally:
        listener.disconnect()
        listener.loop_stop()
    listed = devices(stack, registry, topic_root, "list")["output"]
    assert listed.count(",active") == 50


def test_an_import_the_broker_refuses_in_part_shows_the_secrets_of_the_accounts_it_made(
    private_servers: LocalServers, topic_root: str, tmp_path: Path
) -> None:
    """Mosquitto applies each command it can: one account refused (an old one of that name left
    on the broker) must not cost the others the secrets only this run knows."""
    stack = private_servers
    registry = write_registry(tmp_path / "registry.csv")
    admin = MqttUrl.parse(stack.mosquitto.tls_url("citysense-admin"))
    left = dynsec.DeviceAccount("WP-900001", "water_pipe", dynsec.new_secret())
    dynsec.Control(admin).run(dynsec.create_device(topic_root, left))
    batch = tmp_path / "new.csv"
    batch.write_text(
        "device_id,profile,district,latitude,longitude,address\n"
        + "".join(f"WP-90000{n},water_pipe,Gongshu,30.3,120.1,{n} Pipe St\n" for n in range(3))
    )
    said = devices(stack, registry, topic_root, "import", str(batch), fails=True)
    assert "createClient" in said["error"] and "WP-900001" not in said["output"]
    shown = {r["device_id"]: r["secret"] for r in csv.DictReader(io.StringIO(said["output"]))}
    assert sorted(shown) == ["WP-900000", "WP-900002"]
    for device_id, secret in shown.items():
        assert check_broker(MqttUrl.parse(stack.mosquitto.tls_url(device_id, secret)), 5) is None


def test_an_import_stopped_part_way_is_finished_by_the_same_import(
    private_servers: LocalServers, topic_root: str, tmp_path: Path
) -> None:
    """Killed after the registry was written and the broker made the first chunk's accounts:
    the same import run again gives the others theirs, skipping (and naming) those made."""
    stack = private_servers
    registry = write_registry(tmp_path / "registry.csv")
    rows = "".join(f"WP-90000{n},water_pipe,Gongshu,30.3,120.1,{n} Pipe St\n" for n in range(3))
    batch = tmp_path / "new.csv"
    batch.write_text("device_id,profile,district,latitude,longitude,address\n" + rows)
    with registry.open("a") as out:  # what the stopped import left: every row ...
        out.write(rows)
    admin = MqttUrl.parse(stack.mosquitto.tls_url("citysense-admin"))
    made = dynsec.DeviceAccount("WP-900000", "water_pipe", dynsec.new_secret())
    dynsec.Control(admin).run(dynsec.create_device(topic_root, made))  # ... one account
    shown = devices(stack, registry, topic_root, "import", str(batch))
    assert sorted(shown) == ["WP-900001", "WP-900002"]
    for device_id, secret in shown.items():
        assert check_broker(MqttUrl.parse(stack.mosquitto.tls_url(device_id, secret)), 5) is None
    assert all(registry.read_text().count(f"WP-90000{n},") == 1 for n in range(3))
    listed = devices(stack, registry, topic_root, "list")["output"]
    assert all(f"WP-90000{n},water_pipe,Gongshu,active" in listed for n in range(3))


def test_an_import_killed_part_way_has_shown_the_secret_of_every_account_answered(
    private_servers: LocalServers, topic_root: str, tmp_path: Path
) -> None:
    """A real SIGKILL of `devices import` once its first secrets are out: the secret of every
    account the broker had answered for is on its output (they were printed at the end, and
    lost with the process, before), at most one message's accounts have a secret nobody saw,
    and the same import run again skips the accounts made and gives the others theirs."""
    stack = private_servers
    registry = write_registry(tmp_path / "registry.csv")
    ids = [f"WP-9{n:05d}" for n in range(300)]  # three messages to the broker
    batch = tmp_path / "new.csv"
    batch.write_text(
        "device_id,profile,district,latitude,longitude,address\n"
        + "".join(f"{d},water_pipe,Gongshu,30.3,120.1,{n} Pipe St\n" for n, d in enumerate(ids))
    )
    env = {
        **os.environ,
        "CITYSENSE_MQTT_ADMIN_URL": stack.mosquitto.tls_url("citysense-admin"),
        "CITYSENSE_REGISTRY": str(registry),
        "CITYSENSE_TOPIC_ROOT": topic_root,
    }
    command = [sys.executable, "-m", "citysense.cli", "devices", "import", str(batch)]
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) as run:
        assert run.stdout is not None
        lines = [run.stdout.readline(), run.stdout.readline()]  # the header, a first secret
        run.kill()
        lines += run.stdout.readlines()
    assert run.returncode == -9 and lines[0] == "device_id,secret\n"
    first = {r["device_id"]: r["secret"] for r in csv.DictReader(io.StringIO("".join(lines)))}
    assert 0 < len(first) < len(ids), "killed before the first secret or after the last"
    for device_id in (min(first), max(first)):
        url = stack.mosquitto.tls_url(device_id, first[device_id])
        assert check_broker(MqttUrl.parse(url), 5) is None
    accounts = set(devices(stack, registry, topic_root, "list")["output"].split())
    made = {d for d in ids if f"{d},water_pipe,Gongshu,active" in accounts}
    assert set(first) <= made and len(made - set(first)) <= dynsec.COMMANDS_PER_MESSAGE // 2

    again = devices(stack, registry, topic_root, "import", str(batch))
    assert set(again) == set(ids) - made
    assert registry.read_text().count("WP-9") == len(ids)


def test_an_add_stopped_before_the_broker_account_is_finished_by_the_same_add(
    private_servers: LocalServers, topic_root: str, tmp_path: Path
) -> None:
    """`devices add` writes the registry row, then creates the account: killed between the two,
    the device is registered and cannot connect. The same add run again gives it an account
    (the row not written twice); one with an account is refused, as is one that says otherwise."""
    stack = private_servers
    registry = write_registry(tmp_path / "registry.csv")
    with registry.open("a") as out:  # what the stopped add left: its row, no account
        out.write("SL-900001,streetlight,Xihu,30.25,120.15,1 New Rd\n")
    listed = devices(stack, registry, topic_root, "list")["output"]
    assert "SL-900001,streetlight,Xihu,none" in listed
    secret = devices(stack, registry, topic_root, "add", *ADD)["SL-900001"]
    assert registry.read_text().count("SL-900001,") == 1
    assert check_broker(MqttUrl.parse(stack.mosquitto.tls_url("SL-900001", secret)), 5) is None
    refused = devices(stack, registry, topic_root, "add", *ADD, fails=True)["error"]
    assert "already registered" in refused
    devices(stack, registry, topic_root, "revoke", "SL-900001")
    other = [*ADD[:4], "Gongshu", *ADD[5:]]
    assert (
        "registered as a streetlight in Xihu"
        in (devices(stack, registry, topic_root, "add", *other, fails=True)["error"])
    )
    again = devices(stack, registry, topic_root, "add", *ADD)["SL-900001"]
    assert check_broker(MqttUrl.parse(stack.mosquitto.tls_url("SL-900001", again)), 5) is None
    # A row the registry refuses (a latitude off the globe): named, and the file as it was,
    # with no temporary left beside it.
    before = registry.read_bytes()
    off = ["SL-900002", *ADD[1:6], "95.0", *ADD[7:]]
    refused = devices(stack, registry, topic_root, "add", *off, fails=True)["error"]
    assert "not added (SL-900002)" in refused and "registry.csv:14: latitude" in refused
    assert registry.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
