"""The guarantees across a network: every part on a host of its own, and the network failing.

Hosts (tests.support.netns): `broker` (Mosquitto), `db` (InfluxDB), `ingest1` and `ingest2`
(two `citysense ingest` workers in one share group, spool on, stable client ids), `api`
(`citysense api`) and `devices` (this test's publisher). Every link delays what its host sends
by 50 ms and loses 1 % of it. Each scenario counts what was published against what is stored,
point by point (tests.support.faults): nothing lost, nothing twice.

What the test process itself does runs on a host too: it publishes from `devices`, reads
InfluxDB on `db` (its own loopback, outside the faults) and asks each worker on its own host.
"""

from __future__ import annotations

import re
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from api.core.tokens import hash_token
from citysense.children import Child, start_citysense
from citysense.servers import InfluxDB, LocalServers, Mosquitto
from common.influx import InfluxConfig
from common.mqtturl import MqttUrl
from tests.support import netns
from tests.support.faults import assert_exactly, stream_of, wait_stored
from tests.support.influx import count, make_database
from tests.support.mqtt import Stream
from tests.support.netns import Network
from tests.support.polling import wait_for
from tests.support.processes import IngestProcess, ingest_env
from tests.support.servers import ACL_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOSTS = ("broker", "db", "ingest1", "ingest2", "api", "devices")
WORKERS = ("ingest1", "ingest2")
READINGS = 24_000
PER_MESSAGE = 2
RATE = 200.0  # messages/s: the stream lasts 60 s
PARTITION = 30.0  # seconds
MQTT_PORT, INFLUX_PORT, API_PORT = 1883, 8086, 8000
TOKEN = "city-token-across-the-network"


@dataclass
class City:
    net: Network
    servers: LocalServers
    influx: InfluxConfig
    root: str
    group: str
    folder: Path
    workers: dict[str, IngestProcess] = field(default_factory=dict)
    api: Child | None = None

    def client_id(self, host: str) -> str:
        return f"{self.group}-{host}"

    def worker_env(self, host: str, **extra: str) -> dict[str, str]:
        """A worker on `host`: its spool on that host's disk, INFO logs (reconnects are there)."""
        own = self.folder / host
        own.mkdir(parents=True, exist_ok=True)
        return ingest_env(
            self.servers, self.influx, self.root, own, CITYSENSE_LOG_LEVEL="INFO", **extra
        )

    def start_worker(self, host: str) -> IngestProcess:
        worker = IngestProcess(
            self.worker_env(host),
            self.folder / f"{host}.log",
            "--client-id", self.client_id(host), "--share-group", self.group,
        )  # fmt: skip
        with self.net.inside(host):
            worker.start()
        self.workers[host] = worker
        return worker

    def metric(self, host: str, name: str) -> float:
        with self.net.inside(host):
            return self.workers[host].metric(name)

    def stored(self) -> int:
        with self.net.inside("db"):
            return count(self.influx, "water_pipe")

    def dead_letters(self) -> int:
        """Dead letters stored: only `duplicate` ones may be there (assert_exactly)."""
        with self.net.inside("db"):
            return count(self.influx, "dead_letters")

    def wait_stored(self, n: int, timeout: float) -> None:
        with self.net.inside("db"):
            wait_stored(self.influx, n, timeout)

    def assert_exactly(self, expected: dict[tuple[str, int], float]) -> None:
        with self.net.inside("db"):
            assert_exactly(self.influx, expected)

    def publish(self, messages: list[tuple[str, bytes]]) -> Stream:
        """Publish `messages` from host `devices` at RATE, in the background."""
        with self.net.inside("devices"):
            return Stream(self.servers.mosquitto.url("citysense-simulator"), messages, RATE)

    @property
    def api_url(self) -> str:
        return f"http://{self.net.address('api')}:{API_PORT}"

    def api_healthy(self) -> bool:
        """/health answers 200, asked on the API's own host."""
        with self.net.inside("api"):
            try:
                return httpx.get(f"{self.api_url}/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

    def reconnects(self, host: str) -> int:
        """How many times the worker on `host` connected to the broker again."""
        log = (self.folder / f"{host}.log").read_text(errors="replace")
        return max(0, len(re.findall(r"connected to mqtt://", log)) - 1)


@pytest.fixture
def city(tmp_path: Path, topic_root: str) -> Iterator[City]:
    reason = netns.unavailable()
    if reason:
        pytest.skip(reason)
    with Network(tmp_path / "net", HOSTS) as net:
        with net.inside("broker"):
            mosquitto = Mosquitto(
                "mosquitto", tmp_path / "broker", net.address("broker"), MQTT_PORT, root=ACL_ROOT
            )
            mosquitto.start()
        with net.inside("db"):
            influxdb = InfluxDB("influxdb", tmp_path / "db", net.address("db"), INFLUX_PORT)
            influxdb.start()
        servers = LocalServers(mosquitto, influxdb)
        with net.inside("db"):
            influx = make_database(servers)
        city = City(net, servers, influx, topic_root, f"g{secrets.token_hex(3)}", tmp_path)
        try:
            for host in WORKERS:
                city.start_worker(host)
            city.api = start_api(city)
            yield city
        finally:
            for child in (mosquitto, influxdb, city.api):
                if child is not None:
                    child.kill()
            IngestProcess.kill_all()


def start_api(city: City) -> Child:
    """`citysense api` on host `api`, healthy: it reaches InfluxDB and the broker."""
    env = {
        **ingest_env(city.servers, city.influx, city.root, city.folder),
        "CITYSENSE_MQTT_URL": city.servers.mosquitto.url("citysense-api"),
        "CITYSENSE_API_TOKENS": str(write_token(city.folder / "tokens.yaml")),
    }
    with city.net.inside("api"):
        api = start_citysense(
            "api", "--host", city.net.address("api"), "--port", str(API_PORT),
            "--log-level", "warning", log=city.folder / "api.log", env=env,
        )  # fmt: skip
        api.wait_http(f"{city.api_url}/health", 60)
    return api


def write_token(path: Path) -> Path:
    """A tokens file with one city-wide token, TOKEN."""
    path.write_text(f"tokens:\n  - {{name: city, sha256: {hash_token(TOKEN)}, scope: city}}\n")
    return path


def newest(expected: dict[tuple[str, int], float]) -> dict[str, float]:
    """Each device of the stream and the value of its newest reading."""
    last: dict[str, tuple[int, float]] = {}
    for (device, ts), value in expected.items():
        if device not in last or ts > last[device][0]:
            last[device] = (ts, value)
    return {device: value for device, (_ts, value) in last.items()}


def assert_api_serves(city: City, expected: dict[tuple[str, int], float]) -> None:
    """The API, on its host, is healthy; asked from `devices`, across the network, it serves
    every device's newest reading as stored (announced on the state feed, spooled ones too)."""
    wait_for(city.api_healthy, 15, 0.5, "the API healthy")
    want = newest(expected)

    def served() -> dict[str, object]:
        with city.net.inside("devices"):
            try:
                response = httpx.get(
                    f"{city.api_url}/devices",
                    params={"profile": "water_pipe", "limit": 1000},
                    headers={"Authorization": f"Bearer {TOKEN}"},
                    timeout=10,
                )
            except httpx.HTTPError:
                return {}
        if response.status_code != 200:
            return {}
        return {
            item["device_id"]: (item["reading"] or {}).get("values", {}).get("pressure")
            for item in response.json()["items"]
        }

    wait_for(
        lambda: served() == want, 30, 0.5, f"the API serving the newest of {len(want)} devices"
    )


def hold(city: City, seconds: float, since: float) -> None:
    """Keep the fault in place until `seconds` after `since`, the switch alive meanwhile."""
    while (left := since + seconds - time.monotonic()) > 0:
        city.net.check()
        time.sleep(min(left, 1.0))


def partition_mid_stream(city: City, peer: str) -> dict[str, float]:
    """Publish the stream; once a tenth is stored, partition both ingest hosts from `peer` for
    PARTITION seconds; heal; everything stored exactly once. How long the catching up took."""
    messages, expected = stream_of(city.root, READINGS, PER_MESSAGE)
    stream = city.publish(messages)
    city.wait_stored(READINGS // 10, 60)
    assert stream.sent < len(messages), "the stream ended before the partition"
    refused = city.net.switch_counts()["refused"]
    started = time.monotonic()
    for host in WORKERS:
        city.net.partition(host, peer)
    if peer == "db":
        # Each worker finds InfluxDB gone and spools what it takes (acknowledged, its own disk).
        for host in WORKERS:
            wait_for(
                lambda h=host: city.metric(h, "spilled_batches_total") >= 1,
                PARTITION,
                0.5,
                f"{host} spooling",
            )
    wait_for(city.api_healthy, 15, 0.5, "the API healthy: this partition is not its business")
    hold(city, PARTITION, started)
    assert city.net.switch_counts()["refused"] > refused, "the partition dropped nothing"
    backlog = stream.sent * PER_MESSAGE
    assert backlog < len(expected), "the stream ended during the partition"
    for host in WORKERS:
        city.net.heal(host, peer)
    healed = time.monotonic()
    city.wait_stored(backlog, 180)
    facts = {"caught_up": time.monotonic() - healed}
    if peer == "db":
        for host in WORKERS:
            wait_for(
                lambda h=host: city.metric(h, "spool_bytes") == 0, 120, 0.5, f"{host} unspooled"
            )
        facts["unspooled"] = time.monotonic() - healed
        for host in WORKERS:
            assert city.metric(host, "unspooled_batches_total") >= 1
    stream.wait_acked()
    published = time.monotonic()
    city.wait_stored(len(expected), 120)
    facts["after_last_publish"] = time.monotonic() - published
    city.assert_exactly(expected)
    assert_api_serves(city, expected)
    return facts


def stop_workers(city: City) -> None:
    """SIGTERM: each drains and exits 0."""
    for host, worker in city.workers.items():
        if host not in city.net.lost:
            with city.net.inside(host):
                assert worker.terminate() == 0


def test_network_delays_loses_partitions_and_loses_hosts(tmp_path: Path) -> None:
    """The harness itself: 50 ms each way, about 1 % lost, a partition cuts one pair only, a
    lost host's processes are gone, and nothing outlives the network."""
    reason = netns.unavailable()
    if reason:
        pytest.skip(reason)
    with Network(tmp_path / "net", ("a", "b", "c")) as net:
        servers = {}
        for name in ("b", "c"):
            with net.inside(name):
                servers[name] = socket.create_server((net.address(name), 7000))
        with net.inside("a"):
            started = time.monotonic()
            socket.create_connection((net.address("b"), 7000), timeout=10).close()
            assert time.monotonic() - started >= 2 * netns.DELAY  # SYN out, SYN-ACK back
            counts = net.switch_counts()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                for _ in range(3000):
                    udp.sendto(b"x", (net.address("c"), 7001))
                    time.sleep(0.0005)
        wait_for(
            lambda: net.switch_counts()["forwarded"] >= counts["forwarded"] + 2800,
            10,
            0.1,
            "the datagrams through the switch",
        )
        lost = net.switch_counts()["lost"] - counts["lost"]
        assert 5 <= lost <= 100, f"{lost} of 3000 frames lost, expected about 30"
        net.partition("a", "b")
        with net.inside("a"):
            with pytest.raises(OSError):
                socket.create_connection((net.address("b"), 7000), timeout=2)
            socket.create_connection((net.address("c"), 7000), timeout=10).close()
        with net.inside("c"):
            socket.create_connection((net.address("b"), 7000), timeout=10).close()
        net.heal("a", "b")
        with net.inside("a"):
            socket.create_connection((net.address("b"), 7000), timeout=10).close()
            sleeper = subprocess.Popen(["sleep", "600"])
        assert net.processes("a") == [sleeper.pid]
        net.lose("a")
        assert sleeper.wait(5) == -signal.SIGKILL
        assert "state DOWN" in net.run("a", "ip", "link", "show", netns.LINK)
        holders = [host.pid for host in net.hosts.values()]
        for server in servers.values():
            server.close()
    for pid in holders:
        assert not Path(f"/proc/{pid}").exists(), "a namespace outlived its network"


def test_a_partition_ingest_influxdb_30s_mid_stream(city: City) -> None:
    report(city, "a", partition_mid_stream(city, "db"))
    stop_workers(city)


def test_b_partition_ingest_broker_30s_mid_stream(city: City) -> None:
    report(city, "b", partition_mid_stream(city, "broker"))
    stop_workers(city)


def test_c_one_ingest_host_lost_for_good_mid_stream(city: City) -> None:
    messages, expected = stream_of(city.root, READINGS, PER_MESSAGE)
    stream = city.publish(messages)
    city.wait_stored(READINGS // 10, 60)
    assert stream.sent < len(messages), "the stream ended before the loss"
    city.net.lose("ingest2")
    # The broker does not know yet: it keeps dealing ingest2's share to its session. Let some
    # of it pile up there while ingest1 stores its own share.
    at_loss = city.stored()
    wait_for(lambda: city.stored() >= at_loss + READINGS // 10, 60, 0.5, "ingest1 storing on")
    assert stream.sent < len(messages), "the stream ended before the slot was retired"
    # The operator retires the lost slot from a host that is still there (ingest1's), with that
    # host's own disk for its spool: it takes the session over and stores what it holds.
    retire = IngestProcess(
        city.worker_env("ingest1", CITYSENSE_SPOOL_DIR=str(city.folder / "ingest1" / "retire")),
        city.folder / "retire.log",
        "--client-id", city.client_id("ingest2"), "--share-group", city.group, "--retire",
    )  # fmt: skip
    started = time.monotonic()
    with city.net.inside("ingest1"):
        retire.start(wait_ready=False)
    assert retire.proc is not None
    assert retire.proc.wait(180) == 0, retire.log.read_text()[-3000:]
    facts: dict[str, float] = {"retire": time.monotonic() - started}
    took = re.search(r"(\d+) messages stored from its queue", retire.log.read_text())
    assert took is not None, retire.log.read_text()[-3000:]
    facts["retire_messages"] = int(took.group(1))
    assert facts["retire_messages"] > 0, "the lost host's session held nothing: nothing tested"
    with city.net.inside("ingest1"):
        url = city.servers.mosquitto.url("citysense-ingest")
        assert not session_present(url, city.client_id("ingest2")), "the session is still there"
    stream.wait_acked()
    published = time.monotonic()
    city.wait_stored(len(expected), 120)
    facts["after_last_publish"] = time.monotonic() - published
    city.assert_exactly(expected)
    assert_api_serves(city, expected)
    report(city, "c", facts)
    stop_workers(city)


def report(city: City, scenario: str, measured: dict[str, float]) -> None:
    """What happened, for the README: printed (pytest -s, or -rA) and in the test's folder."""
    facts: dict[str, object] = {
        **{k: round(v, 1) for k, v in measured.items()},
        "switch": city.net.switch_counts(),
        "dead_letters": city.dead_letters(),
        "tcp_retransmits": {h: city.net.tcp_retransmits(h) for h in HOSTS},
        "reconnects": {h: city.reconnects(h) for h in WORKERS},
    }
    for host in WORKERS:
        if host not in city.net.lost:
            facts[host] = {
                name: city.metric(host, name)
                for name in (
                    "received_total",
                    "redelivered_skipped_total",
                    "messages_acked_total",
                    "spilled_batches_total",
                    "unspooled_batches_total",
                    "write_retries_total",
                    "acks_voided",
                )
            }
    print(f"scenario {scenario}: {facts}")
    (city.folder / f"report-{scenario}.txt").write_text(repr(facts))


def session_present(url: str, client_id: str) -> bool:
    """Whether the broker still holds a session for `client_id` (connecting without a clean
    start, and leaving the session as it was found)."""
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
