"""Security as shipped: broker credentials and ACL, and secrets that never reach a log or an
answer of any process (ingest, the API, replay), on failure paths too."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr

from api.core.tokens import hash_token
from citysense.dynsec import DeviceAccount
from citysense.servers import LocalServers, free_port
from common.influx import InfluxConfig
from common.process import die_with_parent
from ingest.settings import IngestSettings
from ingest.worker import Worker
from tests.support.api import TOKENS, write_tokens
from tests.support.influx import count, make_database, rows
from tests.support.mqtt import listen, publish, publish_v5, subscriber
from tests.support.polling import wait_for
from tests.support.processes import IngestProcess, ingest_env
from tests.support.seeding import write_registry
from tests.support.servers import local_servers
from wire.topics import TopicLayout

pytestmark = pytest.mark.integration

DEVICE = "SL-000001"
DEVICE_PASSWORD = secrets.token_urlsafe(12)


@pytest.fixture
def stack_with_device(tmp_path: Path) -> Iterator[LocalServers]:
    """Servers whose broker also knows one device by its own credentials."""
    with local_servers(
        tmp_path / "servers", [DeviceAccount(DEVICE, "streetlight", DEVICE_PASSWORD)]
    ) as stack:
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
        wait_for(lambda: worker.stats.messages_acked >= 1, 10, what="its acknowledgement")
        # One publisher's messages reach a subscriber in order: had the broker delivered the
        # forged one, ingest would have taken it before the device's own.
        assert worker.stats.received == 1
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
        # Each publish above returned on its PUBACK, after the broker had routed it: a fake one
        # delivered would be queued for the listener ahead of ingest's announcement.
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


# --- the ACL: what each broker user may publish (citysense/dynsec.py) ----------------

NOT_AUTHORIZED = 0x87  # what Mosquitto answers an MQTT 5 publish its ACL denies


@pytest.mark.parametrize("service", ["citysense-ingest", "citysense-api"])
def test_services_may_only_read(
    stack_with_device: LocalServers, topic_root: str, service: str
) -> None:
    """Ingest and the API read devices' telemetry and status and publish neither; the API
    publishes nothing at all, ingest only its state feed."""
    stack = stack_with_device
    layout = TopicLayout(topic_root)
    heard, listener = listen(
        stack.mosquitto.url("citysense-api"),
        [layout.subscription, layout.status_subscription, layout.state_feed_subscription],
    )
    own = stack.mosquitto.url(service)
    try:
        denied = [layout.telemetry("streetlight", DEVICE), layout.status("streetlight", DEVICE)]
        if service == "citysense-api":
            denied.append(layout.state_feed(service))
        for topic in denied:
            answer = publish_v5(own, topic, b'{"ts": 1, "powerState": "on"}')
            assert answer.value == NOT_AUTHORIZED, (service, topic, str(answer))
        expected = []
        if service == "citysense-ingest":  # what it may write: the state feed
            answer = publish_v5(own, layout.state_feed(service), b'{"readings": []}')
            assert not answer.is_failure, str(answer)
            expected.append((layout.state_feed(service), b'{"readings": []}'))
        # A marker published after them: were anything denied above delivered, it came first.
        marker = (layout.telemetry("streetlight", DEVICE), b"marker")
        publish(stack.mosquitto.url("citysense-simulator"), [marker])
        wait_for(lambda: marker in heard, 10, what="the marker")
        assert heard == [*expected, marker]
    finally:
        listener.disconnect()
        listener.loop_stop()


def test_a_device_cannot_write_another_devices_status(
    stack_with_device: LocalServers, topic_root: str
) -> None:
    stack = stack_with_device
    layout = TopicLayout(topic_root)
    other = layout.status("streetlight", "SL-000002")
    own = layout.status("streetlight", DEVICE)
    reader = stack.mosquitto.url("citysense-api")
    heard, listener = listen(reader, [layout.status_subscription])
    try:
        answer = publish_v5(device_url(stack), other, b"offline", retain=True)
        assert answer.value == NOT_AUTHORIZED, str(answer)
        assert not publish_v5(device_url(stack), own, b"online", retain=True).is_failure
        wait_for(lambda: heard, 10, what="the device's own status")
        assert heard == [(own, b"online")]
    finally:
        listener.disconnect()
        listener.loop_stop()
    # Nor was anything retained for the other device: subscribed first to its topic, a new
    # subscriber would get a retained status there before the device's own.
    late, listener = listen(reader, [other, own])
    try:
        wait_for(lambda: late, 10, what="the retained status")
        assert late == [(own, b"online")]
    finally:
        listener.disconnect()
        listener.loop_stop()


# --- secrets in no log of any process, failure paths too ----------------------------------------

INFLUX_TOKEN = "influx-token-" + secrets.token_hex(8)
INFLUX_PASSWORD = "influx-url-pw-" + secrets.token_hex(8)


def found(secrets_: list[str], text: str) -> list[str]:
    """The secrets (or their SHA-256, the form a tokens file keeps) that `text` holds."""
    return [s for s in secrets_ if s in text or hash_token(s) in text]


def with_password(url: str, password: str) -> str:
    """`url` (http:// or mqtt://) with `password` for a user inside it."""
    scheme, rest = url.split("://", 1)
    user = rest.split("@", 1)[0].split(":", 1)[0] if "@" in rest else "reader"
    where = rest.split("@", 1)[-1]
    return f"{scheme}://{user}:{password}@{where}"


def server_logs(stack: LocalServers) -> str:
    """What the broker and InfluxDB logged (the servers are processes of the deployment too)."""
    files = (stack.mosquitto.log_file, stack.influxdb.log_file)
    return "".join(f.read_text(errors="replace") for f in files if f.exists())


def closed_port() -> str:
    return f"http://127.0.0.1:{free_port()}"


def logged(text: str) -> Callable[[IngestProcess], bool]:
    return lambda ingest: text in ingest.log.read_text()


def run_ingest_briefly(
    env: dict[str, str],
    log: Path,
    until: Callable[[IngestProcess], bool],
    publish_to: str | None = None,
) -> int:
    """Ingest, logging at DEBUG, until `until` holds, a valid and a broken message published to
    it on the way when `publish_to` names a publisher's URL; then SIGTERM; its exit status."""
    ingest = IngestProcess({**env, "CITYSENSE_LOG_LEVEL": "DEBUG"}, log)
    ingest.start(wait_ready=False)
    if publish_to is not None:
        wait_for(lambda: "subscribed" in log.read_text(), 20, what="subscription log line")
        layout = TopicLayout(env["CITYSENSE_TOPIC_ROOT"])
        t = time.time_ns() // 1_000_000
        topic = layout.telemetry("streetlight", "SL-000001")
        publish(publish_to, [(topic, orjson.dumps({"ts": t, "powerState": "on"})), (topic, b"{")])
    wait_for(lambda: until(ingest), 30, what="the scenario to happen")
    return ingest.terminate(timeout=30)


@pytest.mark.parametrize("failure", ["influxdb_unreachable", "broker_refuses"])
def test_ingest_logs_no_secret_when_something_fails(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, tmp_path: Path, failure: str
) -> None:
    mqtt_url = servers.mosquitto.url("citysense-ingest")
    hidden = [servers.mosquitto.passwords["citysense-ingest"], INFLUX_TOKEN]
    env = ingest_env(
        servers,
        influx,
        topic_root,
        tmp_path,
        name="secret",
        CITYSENSE_INFLUX_TOKEN=INFLUX_TOKEN,
        CITYSENSE_DRAIN_TIMEOUT="1",
        CITYSENSE_SPOOL_DIR="",
    )
    log = tmp_path / "ingest.log"
    if failure == "influxdb_unreachable":
        env["CITYSENSE_INFLUX_URL"] = closed_port()
        status = run_ingest_briefly(
            env, log, logged("write failed"), servers.mosquitto.url("citysense-simulator")
        )
        assert status == 1  # it held what it could not store
    else:
        wrong = "wrong-mqtt-pw-" + secrets.token_hex(8)
        hidden.append(wrong)
        env["CITYSENSE_MQTT_URL"] = with_password(mqtt_url, wrong)
        status = run_ingest_briefly(env, log, logged("refused the connection"))
        assert status == 0
    text = log.read_text()
    assert "***" in text  # the broker's URL was logged, masked: the search below is not vacuous
    assert found(hidden, text) == []
    assert found(hidden, server_logs(servers)) == []


@pytest.mark.parametrize(
    "influxdb",
    ["reachable", "unreachable"],
)
def test_a_password_in_the_influxdb_url_reaches_no_ingest_log(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, tmp_path: Path, influxdb: str
) -> None:
    base = influx.url if influxdb == "reachable" else closed_port()
    env = ingest_env(
        servers,
        influx,
        topic_root,
        tmp_path,
        name="secret",
        CITYSENSE_INFLUX_URL=with_password(base, INFLUX_PASSWORD),
        CITYSENSE_DRAIN_TIMEOUT="1",
        CITYSENSE_SPOOL_DIR="",
    )
    log = tmp_path / "ingest.log"
    if influxdb == "reachable":
        until = lambda ingest: ingest.metric("messages_acked_total") == 2  # noqa: E731
    else:
        until = logged("write failed")
    run_ingest_briefly(env, log, until, servers.mosquitto.url("citysense-simulator"))
    assert found([INFLUX_PASSWORD], log.read_text()) == []


@pytest.mark.parametrize("where", ["token", "url"])
def test_replay_with_influxdb_unreachable_prints_no_secret(
    servers: LocalServers, topic_root: str, where: str
) -> None:
    password = servers.mosquitto.passwords["citysense-ingest"]
    url = closed_port()
    env = {
        **os.environ,
        "CITYSENSE_MQTT_URL": servers.mosquitto.url("citysense-ingest"),
        "CITYSENSE_INFLUX_URL": with_password(url, INFLUX_PASSWORD) if where == "url" else url,
        "CITYSENSE_INFLUX_TOKEN": INFLUX_TOKEN,
        "CITYSENSE_INFLUX_TIMEOUT": "2",
        "CITYSENSE_TOPIC_ROOT": topic_root,
        "CITYSENSE_LOG_LEVEL": "DEBUG",
    }
    done = subprocess.run(
        [sys.executable, "-m", "citysense.cli", "replay", "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode != 0  # it could not reach InfluxDB, and says so
    text = done.stdout + done.stderr
    assert "InfluxDB" in text
    hidden = [password, INFLUX_TOKEN] + ([INFLUX_PASSWORD] if where == "url" else [])
    assert found(hidden, text) == []


BAD_TOKEN = "bad-token-" + secrets.token_hex(8)
API_ROUTES = [
    "/devices",
    "/devices/SL-A1",
    "/devices/SL-A1/history?field=powerConsumption",
    "/devices.geojson",
    "/districts",
    "/districts/North/summary",
    "/aggregates?profile=water_pipe&field=pressure&every=1h",
    "/alarms",
    "/dead-letters",
    "/dead-letters/counts",
    "/stream?kind=nothing",
    "/health",
]


@contextmanager
def api_process(env: dict[str, str], log: Path) -> Iterator[str]:
    """`citysense api` logging at debug, as a real process; its base URL while it runs."""
    port = free_port()
    argv = ["api", "--port", str(port), "--log-level", "debug"]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "citysense.cli", *argv],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - prctl only, no locks taken
        )
    base = f"http://127.0.0.1:{port}"

    def listening() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            httpx.get(f"{base}/health", timeout=10)
        except httpx.HTTPError:
            return False
        return True

    try:
        wait_for(listening, 30, what="the API listening")
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("influxdb", ["reachable", "unreachable"])
def test_the_api_logs_and_answers_no_secret(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, tmp_path: Path, influxdb: str
) -> None:
    """Every route asked with every kind of token, a bad one and none, InfluxDB there or not
    (503s): no token, password or InfluxDB credential in any answer or log line."""
    base_url = influx.url if influxdb == "reachable" else closed_port()
    env = {
        **os.environ,
        "CITYSENSE_MQTT_URL": servers.mosquitto.url("citysense-api"),
        "CITYSENSE_INFLUX_URL": with_password(base_url, INFLUX_PASSWORD),
        "CITYSENSE_INFLUX_DB": influx.database,
        "CITYSENSE_INFLUX_TOKEN": INFLUX_TOKEN,
        "CITYSENSE_INFLUX_TIMEOUT": "2",
        "CITYSENSE_API_HEALTH_TIMEOUT": "2",
        "CITYSENSE_API_TOKENS": str(write_tokens(tmp_path / "tokens.yaml")),
        "CITYSENSE_REGISTRY": str(write_registry(tmp_path / "registry.csv")),
        "CITYSENSE_TOPIC_ROOT": topic_root,
    }
    log = tmp_path / "api.log"
    answers: list[httpx.Response] = []
    with api_process(env, log) as base:
        for token in [*TOKENS.values(), BAD_TOKEN, None]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            for route in API_ROUTES:
                answers.append(httpx.get(base + route, headers=headers, timeout=30))
            answers.append(httpx.post(f"{base}/alarms/x/acknowledge", headers=headers, timeout=30))
    hidden = [
        servers.mosquitto.passwords["citysense-api"],
        INFLUX_PASSWORD,
        INFLUX_TOKEN,
        *TOKENS.values(),
        BAD_TOKEN,
    ]
    text = log.read_text()
    assert found(hidden, text) == []
    assert found(hidden, server_logs(servers)) == []
    for answer in answers:
        assert found(hidden, f"{answer.headers}\n{answer.text}") == [], answer.request.url
    statuses = {a.status_code for a in answers}
    assert {401, 403} <= statuses
    if influxdb == "unreachable":
        assert 503 in statuses
        # The URL was in the failures, masked: the searches above were not vacuous.
        assert "reader:***@" in text
        assert any("reader:***@" in a.text for a in answers if a.status_code == 503)
    else:
        assert 200 in statuses
