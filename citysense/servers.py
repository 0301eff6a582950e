"""Mosquitto and InfluxDB as child processes on loopback, with data in a folder we own.

Used by `citysense up` (a folder under the working directory) and by the test fixtures (a fresh
temporary folder, free ports). No systemd, no shared system state: stopping the parent stops them.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx

from citysense.broker import ACCOUNTS, BrokerLayout
from citysense.children import get_local
from citysense.dynsec import DeviceAccount
from citysense.programs import find_binary
from common.process import die_with_parent

CONF_DIR = Path(__file__).resolve().parent / "conf"


PORT_ATTEMPTS = 3
INFLUXD_GOGC = "200"  # see InfluxDB.environment
# MQTT 3.1.1 CONNECT, clean session, keepalive 5 s, client id "citysense-probe", no credentials:
# 29 bytes written out by hand: a readiness probe needs no client library.
_PROBE_CONNECT = b"\x10\x1b\x00\x04MQTT\x04\x02\x00\x05\x00\x0fcitysense-probe"


# Ports drawn below the kernel's ephemeral range (32768 up by default), not asked of the
# kernel: a port it hands out as free may become an outgoing connection's source port before
# the server binds it, or while a server is stopped to be restarted on it (a fault test's
# InfluxDB outage did: "bind: address already in use").
FREE_PORTS = range(20_000, 32_000)
_PORT_DRAWS = 200
# Ports this process handed out: a server stopped for a while (a fault test's outage) leaves
# its port free to the bind check, and handing it out again put two servers on one port.
_HANDED: set[int] = set()


def port_range() -> range:
    """FREE_PORTS, or the part of it `CITYSENSE_FREE_PORTS` (`low-high`) names: processes that
    run side by side (the test suite's workers, tests/conftest.py) draw from parts of their
    own. One's server stopped to be restarted leaves its port free to the other's bind check:
    two test processes put their servers on one port, and a readiness check was answered by
    the other's (a fault test failed so)."""
    named = os.environ.get("CITYSENSE_FREE_PORTS", "")
    low, _, high = named.partition("-")
    if low.isdigit() and high.isdigit() and int(low) < int(high):
        return range(int(low), int(high) + 1)
    return FREE_PORTS


def free_port(host: str = "127.0.0.1") -> int:
    ports = port_range()
    if sum(port in ports for port in _HANDED) > len(ports) // 2:
        _HANDED.clear()  # a long-lived process: the oldest were given back long ago
    for _ in range(_PORT_DRAWS):
        port = secrets.choice(ports)
        if port in _HANDED:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            _HANDED.add(port)
            return port
    raise RuntimeError(f"no free port on {host} in {ports.start}-{ports.stop - 1}")


def _wait_until(ready: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
    raise RuntimeError(f"{what} did not become ready within {timeout:.0f}s; log tail:\n{tail}")


@dataclass
class _Child:
    """One server process: render config, start, wait for readiness, stop, kill."""

    name: str
    home: Path
    host: str
    port: int
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    # Whether the ports were picked by free_port (may be retried) or given (must be kept).
    ports_chosen: bool = field(default=False, kw_only=True)
    started_once: bool = field(default=False, init=False)

    @property
    def log_file(self) -> Path:
        return self.home / f"{self.name}.log"

    @property
    def pid(self) -> int:
        """The running server's process id (a benchmark samples its CPU)."""
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process.pid

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 60.0) -> None:
        """Start and wait until ready. Ports chosen here (`free_port`) can be taken by another
        program between the choice and the bind: on a first start, that is retried on new ports
        (never on a restart, whose clients expect the same ones)."""
        for attempt in range(PORT_ATTEMPTS):
            try:
                self._start_once(timeout)
                self.started_once = True
                return
            except RuntimeError as exc:
                taken = "already in use" in str(exc).lower()
                if not (taken and self.ports_chosen and not self.started_once):
                    raise
                if attempt == PORT_ATTEMPTS - 1:
                    raise
                self.process = None
                self.repick_ports()

    def repick_ports(self) -> None:
        self.port = free_port(self.host)

    def _start_once(self, timeout: float) -> None:
        if self.running:
            return
        self.home.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Its own session, so a Ctrl-C aimed at us does not stop it before the services
                # that depend on it have drained; it still dies with us (PR_SET_PDEATHSIG).
                start_new_session=True,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - prctl only, no locks taken
            )
        _wait_until(self._ready_or_dead, timeout, self.name, self.log_file)

    def _ready_or_dead(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            tail = self.log_file.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{tail}")
        return self.ready()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop (SIGTERM): Mosquitto saves its persistence file, influxd its WAL."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass
class Mosquitto(_Child):
    root: str = "city"
    passwords: dict[str, str] = field(default_factory=dict, repr=False)
    # Devices with their own accounts, written into the broker's accounts file at start.
    devices: list[DeviceAccount] = field(default_factory=list, repr=False)
    tls_port: int = 0
    max_queued_messages: int = 8_000_000
    max_queued_bytes: int = 4 * 1024**3
    max_inflight_messages: int = 65_535
    # Seconds between saves of the persistence file: what a crash (SIGKILL) can lose at most.
    autosave_interval: int = 10

    def url(self, user: str) -> str:
        """Plain MQTT on the internal listener, as the services use it."""
        return f"mqtt://{user}:{self.passwords[user]}@{self.host}:{self.port}"

    def tls_url(self, user: str, password: str | None = None) -> str:
        """MQTT over TLS, checked against this broker's CA, as a device connects."""
        secret = password if password is not None else self.passwords[user]
        ca = quote(str(self.layout.tls_files.ca_cert))
        return f"mqtts://{user}:{secret}@localhost:{self.tls_port}?ca={ca}"

    def repick_ports(self) -> None:
        self.port = free_port(self.host)
        self.tls_port = free_port(self.host)

    @property
    def layout(self) -> BrokerLayout:
        if not self.tls_port:
            self.tls_port = free_port(self.host)
        return BrokerLayout(
            home=self.home,
            host=self.host,
            port=self.port,
            tls_host=self.host,
            tls_port=self.tls_port,
            root=self.root,
            max_queued_messages=self.max_queued_messages,
            max_queued_bytes=self.max_queued_bytes,
            max_inflight_messages=self.max_inflight_messages,
            autosave_interval=self.autosave_interval,
        )

    @property
    def log_file(self) -> Path:
        return self.layout.log_file

    def command(self) -> list[str]:
        for user in ACCOUNTS:
            self.passwords.setdefault(user, secrets.token_urlsafe(18))
        conf = self.layout.render(self.passwords, self.devices)
        self.devices = []  # in the accounts file now; a restart must not reset their passwords
        return [find_binary("mosquitto", "CITYSENSE_MOSQUITTO_BIN"), "-c", str(conf)]

    @property
    def conf_file(self) -> Path:
        return self.layout.conf_file

    def ready(self) -> bool:
        """Mosquitto answers an MQTT CONNECT (with a refusal: no credentials): an open port alone
        could be another program's, which took a port we chose before Mosquitto could bind it."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.settimeout(0.5)
                sock.sendall(_PROBE_CONNECT)
                return sock.recv(1) == b"\x20"  # CONNACK
        except OSError:
            return False

    @property
    def persistence_file(self) -> Path:
        return self.home / "data" / "mosquitto.db"

    def save(self, timeout: float = 10.0) -> None:
        """Have Mosquitto write its persistence file now (SIGUSR1), and wait until it has."""
        assert self.process is not None, "mosquitto is not running"
        before = self._saved_at()
        self.process.send_signal(signal.SIGUSR1)
        _wait_until(lambda: self._saved_at() != before, timeout, "mosquitto save", self.log_file)

    def _saved_at(self) -> int:
        try:
            return self.persistence_file.stat().st_mtime_ns
        except FileNotFoundError:
            return 0


@dataclass
class InfluxDB(_Child):
    rpc_port: int = 0
    retention_check: str = "30m"
    auth: bool = False  # on: accounts as `citysense schema` creates them (the compose stack)
    # Off: InfluxDB runs no continuous query by itself (bench.rollups runs their statements).
    continuous_queries: bool = True

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def repick_ports(self) -> None:
        self.port = free_port(self.host)
        self.rpc_port = free_port(self.host)

    def environment(self) -> dict[str, str]:
        # Go's collector at GOGC=200 rather than 100: storing the benchmark's readings cost
        # influxd 17 % less CPU (22 -> 18.5 µs a reading, 5,000-line writes) for 30 % more
        # resident memory; 400 saved no more and took twice the memory. An operator's own
        # GOGC wins. The compose stack sets the same.
        return {"GOGC": INFLUXD_GOGC, **os.environ}

    def command(self) -> list[str]:
        if not self.rpc_port:
            self.rpc_port = free_port(self.host)
        data_dir = self.home / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        conf = (
            (CONF_DIR / "influxdb.conf")
            .read_text()
            .format(
                host=self.host,
                port=self.port,
                rpc_port=self.rpc_port,
                data_dir=data_dir,
                retention_check=self.retention_check,
                auth=str(self.auth).lower(),
                continuous_queries=str(self.continuous_queries).lower(),
            )
        )
        conf_file = self.home / "influxdb.conf"
        conf_file.write_text(conf)
        return [find_binary("influxd", "CITYSENSE_INFLUXD_BIN"), "-config", str(conf_file)]

    def ready(self) -> bool:
        try:
            return get_local(f"{self.url}/ping", timeout=0.5).status_code == 204
        except httpx.HTTPError:
            return False


@dataclass
class LocalServers:
    """Both servers under one home folder."""

    mosquitto: Mosquitto
    influxdb: InfluxDB

    @classmethod
    def create(
        cls,
        home: Path,
        *,
        root: str = "city",
        host: str = "127.0.0.1",
        mqtt_port: int | None = None,
        influx_port: int | None = None,
        influx_host: str | None = None,
    ) -> LocalServers:
        """`influx_host` (default `host`): where InfluxDB listens, which these servers run
        without authentication."""
        mosquitto = Mosquitto(
            "mosquitto",
            home / "mosquitto",
            host,
            mqtt_port or free_port(host),
            root=root,
            ports_chosen=mqtt_port is None,
        )
        influx_host = influx_host or host
        influxdb = InfluxDB(
            "influxdb",
            home / "influxdb",
            influx_host,
            influx_port or free_port(influx_host),
            ports_chosen=influx_port is None,
        )
        return cls(mosquitto=mosquitto, influxdb=influxdb)

    def start(self) -> None:
        self.mosquitto.start()
        self.influxdb.start()

    def stop(self) -> None:
        self.mosquitto.stop()
        self.influxdb.stop()
