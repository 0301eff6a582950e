"""Ingest against the real Mosquitto and InfluxDB: what is published is what is stored."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from pydantic import SecretStr

from citysense.servers import LocalServers, free_port
from common.influx import InfluxClient, InfluxConfig
from device_profiles import load_profiles
from ingest.settings import IngestSettings
from ingest.worker import Worker
from tests.support.influx import count, rows
from tests.support.mqtt import publish, subscriber
from tests.support.polling import wait_for
from wire.changes import MEASUREMENT as MARKS
from wire.changes import window_of
from wire.retention import CHANGES
from wire.topics import TopicLayout

pytestmark = pytest.mark.integration


def settings_for(
    servers: LocalServers, influx: InfluxConfig, root: str, **extra: object
) -> IngestSettings:
    return IngestSettings(
        mqtt_url=SecretStr(servers.mosquitto.url("citysense-ingest")),
        influx_url=influx.url,
        influx_db=influx.database,
        topic_root=root,
        client_id=f"ingest-{root.replace('/', '-')}",
        http_port=0,
        flush_interval=0.05,
        retry_initial=0.05,
        retry_max=0.5,
        **{"spool_dir": None, **extra},  # type: ignore[arg-type]
    )


@pytest.fixture
def worker(servers: LocalServers, influx: InfluxConfig, topic_root: str) -> Iterator[Worker]:
    settings = settings_for(servers, influx, topic_root)
    profiles, registry = settings.load_contract()
    running = Worker(settings, profiles, registry)
    running.start()
    wait_for(running.consumer.subscribed.is_set, 10, what="subscription")
    yield running
    running.stop()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_values_tags_and_time_are_stored_exactly(
    worker: Worker, servers: LocalServers, influx: InfluxConfig, topic_root: str
) -> None:
    layout = TopicLayout(topic_root)
    t = now_ms() - 60_000
    messages = [
        (
            layout.telemetry("streetlight", "SL-000001"),
            orjson.dumps(
                {
                    "ts": t,
                    "powerState": "on",
                    "powerConsumption": 121.5,
                    "voltage": 229,
                    "doorOpen": False,
                }
            ),
        ),
        (
            layout.telemetry("water_pipe", "WP-000002"),  # an array: a node uploading its buffer
            orjson.dumps(
                [
                    {"ts": t // 1000, "pressure": 301.25, "rssi": -71},
                    {"ts": t // 1000 + 300, "pressure": 299.5, "rssi": -72},
                ]
            ),
        ),
    ]
    publish(servers.mosquitto.url("citysense-simulator"), messages)
    wait_for(lambda: worker.stats.messages_acked == 2, 10, what="acks")

    light = rows(influx, 'SELECT * FROM "streetlight"')
    assert light == [
        {
            "time": t * 1_000_000,
            "device_id": "SL-000001",
            "district": "Shangcheng",
            "powerState": "on",
            "powerConsumption": 121.5,
            "voltage": 229.0,
            "doorOpen": False,
        }
    ]
    pipe = rows(influx, 'SELECT pressure, rssi, device_id, district FROM "water_pipe"')
    assert [(r["time"], r["pressure"], r["rssi"]) for r in pipe] == [
        ((t // 1000) * 10**9, 301.25, -71),
        ((t // 1000 + 300) * 10**9, 299.5, -72),
    ]
    assert {r["district"] for r in pipe} == {"Gongshu"}
    assert count(influx, "dead_letters") == 0


def test_bad_messages_become_dead_letters_and_ingest_continues(
    worker: Worker, servers: LocalServers, influx: InfluxConfig, topic_root: str
) -> None:
    layout = TopicLayout(topic_root)
    t = now_ms()
    light = layout.telemetry("streetlight", "SL-000003")
    bad = {
        "invalid_json": (light, b'{"ts": 1, "powerState": '),
        "invalid_utf8": (light, b'{"powerState": "\xff"}'),
        "wrong_type": (light, orjson.dumps({"ts": t, "powerState": "on", "voltage": "high"})),
        "out_of_range": (light, orjson.dumps({"ts": t, "powerState": "on", "voltage": 9000})),
        "unknown_device": (
            layout.telemetry("streetlight", "SL-999999"),
            orjson.dumps({"ts": t, "powerState": "on"}),
        ),
        "profile_mismatch": (
            layout.telemetry("water_pipe", "SL-000003"),
            orjson.dumps({"ts": t, "pressure": 200}),
        ),
        "unknown_profile": (layout.telemetry("teapot", "T-1"), b"{}"),
        "timestamp_in_future": (light, orjson.dumps({"ts": t + 86_400_000, "powerState": "on"})),
    }
    good = [(light, orjson.dumps({"ts": t - i * 1000, "powerState": "off"})) for i in range(5)]
    publish(servers.mosquitto.url("citysense-simulator"), [*bad.values(), *good])
    wait_for(lambda: worker.stats.messages_acked == len(bad) + len(good), 10, what="acks")

    assert count(influx, "streetlight") == 5
    letters = rows(influx, "SELECT * FROM dead_letters.dead_letters")
    assert sorted(r["reason"] for r in letters) == sorted(bad)
    assert {r["worker"] for r in letters} == {worker.settings.client_id}  # whose, never one point
    by_reason = {r["reason"]: r for r in letters}
    # the raw payload is kept, safely encoded, so it can be inspected and replayed
    assert orjson.loads(str(by_reason["wrong_type"]["payload"])) == bad["wrong_type"][1].decode()
    assert by_reason["invalid_utf8"]["payload_encoding"] == "base64"
    assert by_reason["unknown_device"]["device_id"] == "SL-999999"
    assert "voltage" in str(by_reason["out_of_range"]["detail"])
    counted = sum(worker.stats.rejections.values())
    assert counted == len(bad)


def test_nothing_is_acked_while_influxdb_is_down(
    private_servers: LocalServers, topic_root: str
) -> None:
    """Acknowledge after store: what a worker could not store during an outage stays with the
    broker, so a worker that gives up and a new one that starts later lose nothing."""
    influx = InfluxConfig(url=private_servers.influxdb.url, database="outage")
    settings = settings_for(private_servers, influx, topic_root, drain_timeout=1.0)
    profiles, registry = settings.load_contract()
    first = Worker(settings, profiles, registry)
    first.start()
    wait_for(first.consumer.subscribed.is_set, 10, what="subscription")
    private_servers.influxdb.stop()
    layout = TopicLayout(topic_root)
    t = now_ms()
    messages = [
        (
            layout.telemetry("streetlight", "SL-000004"),
            orjson.dumps({"ts": t - i * 1000, "powerState": "on"}),
        )
        for i in range(50)
    ]
    publish(private_servers.mosquitto.url("citysense-simulator"), messages)
    wait_for(lambda: first.stats.write_retries >= 3, 10, what="retries")
    assert first.stop() is False  # could not drain: InfluxDB is still down
    assert first.stats.messages_acked == 0

    private_servers.influxdb.start()
    second = Worker(settings, profiles, registry)  # same client id: resumes the session
    second.start()
    try:
        wait_for(lambda: second.stats.messages_acked == 50, 20, what="redelivered and acked")
        assert count(influx, "streetlight") == 50
    finally:
        second.stop()


def test_a_worker_started_while_influxdb_is_away_sets_up_a_new_database_once_it_is_back(
    private_servers: LocalServers, topic_root: str
) -> None:
    """The database's set-up failed at start (InfluxDB away): a write that finds the database
    missing runs it again, so the readings of a new database are stored once InfluxDB is back
    (before, every write to the database never made was refused as not found, for good)."""
    influx = InfluxConfig(url=private_servers.influxdb.url, database="made_later")
    private_servers.influxdb.stop()
    settings = settings_for(private_servers, influx, topic_root)
    profiles, registry = settings.load_contract()
    worker = Worker(settings, profiles, registry)
    worker.start()
    try:
        wait_for(worker.consumer.subscribed.is_set, 10, what="subscription")
        t = now_ms()
        topic = TopicLayout(topic_root).telemetry("streetlight", "SL-000004")
        messages = [
            (topic, orjson.dumps({"ts": t - i * 1000, "powerState": "on"})) for i in range(5)
        ]
        publish(private_servers.mosquitto.url("citysense-simulator"), messages)
        private_servers.influxdb.start()
        wait_for(lambda: worker.stats.messages_acked == 5, 30, what="stored once it is back")
        assert count(influx, "streetlight") == 5
    finally:
        worker.stop()


def test_a_subscription_the_broker_refuses_shows_in_the_subscribed_gauge(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A root ingest's account may not read (its ACL): the broker refuses the subscription, no
    thread dies and nothing reconnects, so only `subscribed` (and its alert) tells."""
    line = "citysense_ingest_subscribed "
    for root, expected in ((topic_root, "1.0"), ("not-ours", "0.0")):
        settings = settings_for(servers, influx, root)
        profiles, registry = settings.load_contract()
        worker = Worker(settings, profiles, registry)
        worker.start()
        try:
            if expected == "1.0":
                wait_for(worker.consumer.subscribed.is_set, 10, what="subscription")
            else:
                wait_for(
                    lambda: any(
                        "refused subscription not-ours/" in r.getMessage() for r in caplog.records
                    ),
                    10,
                    what="the SUBACK's refusal",
                )
            [value] = [x for x in worker.stats.prometheus().splitlines() if x.startswith(line)]
            assert value == line + expected, root
        finally:
            worker.stop()


# --- the worker as a process, killed -------------------------------------------------------


def start_ingest(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "citysense.cli", "ingest"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    port = env["CITYSENSE_HTTP_PORT"]

    def ready() -> bool:
        assert proc.poll() is None, log.read_text()[-2000:]
        try:
            return httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, 30, what="ingest /ready")
    return proc


def holds_nothing(port: str) -> bool:
    """Ingest's /metrics say it holds no message and no line: everything taken is written."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines()
    gauges = ("unacked_messages", "buffered_lines", "held_bytes")
    return all(f"citysense_ingest_{gauge} 0.0" in text for gauge in gauges)


def test_sigkill_mid_stream_loses_nothing_and_stores_nothing_twice(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "CITYSENSE_MQTT_URL": servers.mosquitto.url("citysense-ingest"),
        "CITYSENSE_INFLUX_URL": influx.url,
        "CITYSENSE_INFLUX_DB": influx.database,
        "CITYSENSE_TOPIC_ROOT": topic_root,
        "CITYSENSE_CLIENT_ID": "ingest-kill-test",
        "CITYSENSE_HTTP_PORT": str(free_port()),
        "CITYSENSE_BATCH_SIZE": "500",
        "CITYSENSE_FLUSH_INTERVAL": "0.05",
        "CITYSENSE_SPOOL_DIR": str(tmp_path / "spool"),
    }
    layout = TopicLayout(topic_root)
    t0 = now_ms() - 3_600_000
    devices = [f"SL-{n:06d}" for n in range(1, 201)]
    expected = {(d, t0 + i * 1000): float(i % 250) for i in range(50) for d in devices}
    messages = [
        (
            layout.telemetry("streetlight", d),
            orjson.dumps({"ts": ts, "powerState": "on", "powerConsumption": value}),
        )
        for (d, ts), value in expected.items()
    ]
    proc = start_ingest(env, tmp_path / "ingest.log")
    publisher = threading.Thread(
        target=publish, args=(servers.mosquitto.url("citysense-simulator"), messages)
    )
    publisher.start()
    stored_at_kill = wait_for(lambda: count(influx, "streetlight"), 30, 0.02, "first writes")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    publisher.join(120)
    assert stored_at_kill < len(expected), "the kill came too late to test anything"
    proc = start_ingest(env, tmp_path / "ingest.log")
    try:
        wait_for(lambda: count(influx, "streetlight") >= len(expected), 60, 0.2, "all readings")
        # Anything redelivered late would be written while the worker still holds it: once it
        # holds nothing, an extra point would show up now.
        wait_for(lambda: holds_nothing(env["CITYSENSE_HTTP_PORT"]), 30, what="ingest idle")
        stored = rows(influx, 'SELECT device_id, powerConsumption FROM "streetlight"')
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert len(stored) == len(expected)
    got = {(r["device_id"], int(r["time"]) // 1_000_000): r["powerConsumption"] for r in stored}
    assert got == expected


def test_state_feed_announces_stored_readings(
    worker: Worker, servers: LocalServers, influx: InfluxConfig, topic_root: str
) -> None:
    received: list[dict[str, object]] = []
    bodies: list[dict[str, object]] = []

    def take(payload: bytes) -> None:
        bodies.append(orjson.loads(payload))
        received.extend(bodies[-1]["readings"])  # type: ignore[arg-type]

    listener = subscriber(servers.mosquitto.url("citysense-api"), f"{topic_root}/_ingested/+", take)
    try:
        layout = TopicLayout(topic_root)
        t = now_ms()
        publish(
            servers.mosquitto.url("citysense-simulator"),
            [
                (
                    layout.telemetry("water_pipe", "WP-000002"),
                    orjson.dumps({"ts": t, "pressure": 250, "rssi": -90}),
                ),
                (layout.telemetry("water_pipe", "WP-000002"), b"not json"),
            ],
        )
        wait_for(lambda: received, 10, what="state feed")
    finally:
        listener.disconnect()
        listener.loop_stop()
    assert received == [
        {
            "profile": "water_pipe",
            "device_id": "WP-000002",
            "district": "Gongshu",
            "time": t * 1_000_000,
            "values": {"pressure": 250.0, "rssi": -90},
        }
    ]
    # Numbered from 0 by this run of the worker, with the change mark as InfluxDB holds it.
    [body] = bodies
    assert str(body["publisher"]).startswith(f"{worker.settings.client_id}.")
    assert body["seq"] == 0
    window = window_of(t * 1_000_000)
    [mark] = rows(
        influx,
        f'SELECT "stamp", "profile", "district" FROM "{CHANGES}"."{MARKS}" WHERE time = {window}',
    )
    assert body["marks"] == [[mark["profile"], mark["district"], window, mark["stamp"]]]
    assert mark["profile"] == "water_pipe" and mark["district"] == "Gongshu"


def test_outage_spills_to_disk_survives_restart_and_drains(
    private_servers: LocalServers, topic_root: str, tmp_path: Path
) -> None:
    """Beyond a few seconds of outage, batches go to the disk spool and are acknowledged; a
    restarted worker writes them once InfluxDB is back. Nothing lost, nothing twice."""
    influx = InfluxConfig(url=private_servers.influxdb.url, database="spool")
    settings = settings_for(
        private_servers,
        influx,
        topic_root,
        spool_dir=tmp_path / "spool",
        spill_after=0.3,
        batch_size=20,
        drain_timeout=1.0,
    )
    profiles, registry = settings.load_contract()
    first = Worker(settings, profiles, registry)
    first.start()
    wait_for(first.consumer.subscribed.is_set, 10, what="subscription")
    private_servers.influxdb.stop()
    layout = TopicLayout(topic_root)
    t = now_ms() - 100_000
    messages = [
        (
            layout.telemetry("water_pipe", f"WP-{n % 50 + 1:06d}"),
            orjson.dumps({"ts": t + n * 10, "pressure": 200.0 + n}),
        )
        for n in range(300)
    ]
    publish(private_servers.mosquitto.url("citysense-simulator"), messages)
    wait_for(lambda: first.stats.messages_acked == 300, 20, what="all acked into the spool")
    assert first.stats.spilled_batches >= 1
    assert first.stats.readings_stored == 0
    first.stop()
    segments = list((tmp_path / "spool" / settings.client_id).glob("*.seg"))
    assert segments, "the spool is on disk"

    private_servers.influxdb.start()
    second = Worker(settings, profiles, registry)
    second.start()
    try:
        wait_for(
            lambda: second.spool is not None and not second.spool.segments(),
            20,
            what="spool drained",
        )
        stored = rows(influx, 'SELECT pressure FROM "water_pipe"')
    finally:
        second.stop()
    assert sorted(r["pressure"] for r in stored) == [200.0 + n for n in range(300)]


def test_full_spool_means_back_pressure_not_loss(
    private_servers: LocalServers, topic_root: str, tmp_path: Path
) -> None:
    influx = InfluxConfig(url=private_servers.influxdb.url, database="spoolfull")
    settings = settings_for(
        private_servers,
        influx,
        topic_root,
        spool_dir=tmp_path / "spool",
        spool_max_bytes=4096,
        spill_after=0.2,
        batch_size=10,
    )
    profiles, registry = settings.load_contract()
    worker = Worker(settings, profiles, registry)
    worker.start()
    try:
        wait_for(worker.consumer.subscribed.is_set, 10, what="subscription")
        private_servers.influxdb.stop()
        layout = TopicLayout(topic_root)
        t = now_ms() - 100_000
        messages = [
            (
                layout.telemetry("water_pipe", "WP-000001"),
                orjson.dumps({"ts": t + n * 10, "pressure": 100.0 + n}),
            )
            for n in range(200)
        ]
        publish(private_servers.mosquitto.url("citysense-simulator"), messages)
        wait_for(lambda: worker.stats.write_retries >= 5, 20, what="spool full, retrying")
        assert worker.spool is not None
        assert worker.spool.bytes_used <= 4096
        assert worker.stats.messages_acked < 200  # the rest waits at the broker
        private_servers.influxdb.start()
        wait_for(lambda: count(influx, "water_pipe") == 200, 30, what="everything stored")
    finally:
        worker.stop()


def test_second_vendor_lands_canonically(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, tmp_path: Path
) -> None:
    """A LUMIO controller (added as a data file only) speaks its own dialect; InfluxDB holds
    canonical streetlight names and units."""
    registry = tmp_path / "registry.csv"
    registry.write_text(
        "device_id,profile,district,latitude,longitude,address,variant\n"
        "LUM-000001,streetlight,Xihu,30.25,120.13,1 Lakeside Rd,lumio\n"
        "SL-000001,streetlight,Xihu,30.25,120.14,2 Lakeside Rd,\n"
    )
    settings = settings_for(servers, influx, topic_root, registry=registry)
    worker = Worker(settings, *settings.load_contract())
    worker.start()
    t = now_ms() - 60_000
    vendor = {
        "time": t,
        "lamp": {"state": 1, "dim_pct": 80},
        "meter": {"p_w": 96.5, "u_v": 229.5, "i_ma": 450, "pf_pct": 93, "e_wh": 1_234_567},
        "env": {"t_c": 17.5},
        "cabinet": {"door": "closed"},
        "health": "LAMP_FAIL",
    }
    layout = TopicLayout(topic_root)
    try:
        wait_for(worker.consumer.subscribed.is_set, 10, what="subscription")
        publish(
            servers.mosquitto.url("citysense-simulator"),
            [
                (layout.telemetry("streetlight", "LUM-000001"), orjson.dumps(vendor)),
                (
                    layout.telemetry(
                        "streetlight", "SL-000001"
                    ),  # a canonical device, same measurement
                    orjson.dumps({"ts": t, "powerState": "off", "current": 0.01}),
                ),
            ],
        )
        wait_for(lambda: worker.stats.messages_acked == 2, 10, what="acks")
    finally:
        worker.stop()
    stored = {str(r["device_id"]): r for r in rows(influx, 'SELECT * FROM "streetlight"')}
    lumio = {k: v for k, v in stored["LUM-000001"].items() if v is not None}
    assert lumio == {
        "time": t * 1_000_000,
        "device_id": "LUM-000001",
        "district": "Xihu",
        "powerState": "on",
        "illuminanceLevel": 0.8,
        "powerConsumption": 96.5,
        "voltage": 229.5,
        "current": 0.45,
        "powerFactor": 0.93,
        "lifetimePowerConsumption": 1234.567,
        "temperature": 17.5,
        "doorOpen": False,
        "status": "defectiveLamp",
    }
    assert stored["SL-000001"]["current"] == 0.01
    with InfluxClient(influx) as client:
        fields = client.query('SHOW FIELD KEYS FROM "streetlight"')
    names = {row[0] for s in fields[0] for row in s.values}
    assert names <= set(load_profiles()["streetlight"].fields)  # no vendor name ever stored
    assert count(influx, "dead_letters") == 0


def test_a_district_name_with_a_space_is_stored_whole(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, tmp_path: Path
) -> None:
    # The registry allows spaces in district names; the encoder once cut the series at the
    # escaped space and stored the fields inside a garbled district tag.
    registry = tmp_path / "registry.csv"
    registry.write_text(
        "device_id,profile,district,latitude,longitude,address\n"
        "WP-SPACE-1,water_pipe,West Lake,30.2,120.1,\n"
    )
    settings = settings_for(servers, influx, topic_root, registry=registry)
    profiles, loaded = settings.load_contract()
    worker = Worker(settings, profiles, loaded)
    worker.start()
    try:
        wait_for(worker.consumer.subscribed.is_set, 10, what="subscription")
        t = now_ms() - 60_000
        topic = TopicLayout(topic_root).telemetry("water_pipe", "WP-SPACE-1")
        publish(
            servers.mosquitto.url("citysense-simulator"),
            [(topic, orjson.dumps({"ts": t, "pressure": 301.25}))],
        )
        wait_for(lambda: worker.stats.messages_acked == 1, 10, what="ack")
    finally:
        worker.stop()
    stored = rows(influx, 'SELECT pressure, device_id, district FROM "water_pipe"')
    assert stored == [
        {
            "time": t * 1_000_000,
            "pressure": 301.25,
            "device_id": "WP-SPACE-1",
            "district": "West Lake",
        }
    ]
    marks = rows(influx, "SELECT stamp, district FROM changes.citysense_changes")
    assert [m["district"] for m in marks] == ["West Lake"]
