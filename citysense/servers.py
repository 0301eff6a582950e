"""Mosquitto and InfluxDB as child processes on loopback, with data in a folder we own.

Used by `citysense up` (a folder under the working directory) and by the test fixtures (a fresh
temporary folder, free ports). No systemd, no shared system state: stopping the parent stops them.
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from common.errors import ConfigError
from common.process import die_with_parent

CONF_DIR = Path(__file__).resolve().parent / "conf"
SEARCH_PATH = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")

# MQTT users the shipped ACL knows; passwords are generated per deployment.
MQTT_USERS = ("citysense-ingest", "citysense-api", "citysense-simulator", "citysense-sta")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def find_binary(name: str, env_var: str) -> str:
    explicit = os.environ.get(env_var)
    if explicit:
        return explicit
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(SEARCH_PATH))
    if found is None:
        raise ConfigError(
            f"{name} not found; install Debian's package (apt-get install {name.rstrip('d')}) "
            f"or set {env_var}"
        )
    return found


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

    @property
    def log_file(self) -> Path:
        return self.home / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> None:
        if self.running:
            return
        self.home.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
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

    def _tcp_open(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2):
                return True
        except OSError:
            return False


@dataclass
class Mosquitto(_Child):
    root: str = "city"
    passwords: dict[str, str] = field(default_factory=dict, repr=False)
    max_queued_messages: int = 8_000_000
    max_queued_bytes: int = 4 * 1024**3
    max_inflight_messages: int = 65_535
    # Seconds between saves of the persistence file: what a crash (SIGKILL) can lose at most.
    autosave_interval: int = 10

    def url(self, user: str) -> str:
        return f"mqtt://{user}:{self.passwords[user]}@{self.host}:{self.port}"

    def command(self) -> list[str]:
        self._render()
        return [find_binary("mosquitto", "CITYSENSE_MOSQUITTO_BIN"), "-c", str(self.conf_file)]

    @property
    def conf_file(self) -> Path:
        return self.home / "mosquitto.conf"

    def _render(self) -> None:
        data_dir = self.home / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        for user in MQTT_USERS:
            self.passwords.setdefault(user, secrets.token_urlsafe(18))
        password_file = self.home / "passwd"
        password_file.write_text("".join(f"{u}:{p}\n" for u, p in self.passwords.items()))
        password_file.chmod(0o600)
        # mosquitto_passwd -U hashes a plain `user:password` file in place.
        subprocess.run(
            [
                find_binary("mosquitto_passwd", "CITYSENSE_MOSQUITTO_PASSWD_BIN"),
                "-U",
                str(password_file),
            ],
            check=True,
            capture_output=True,
        )
        acl_file = self.home / "acl"
        acl_file.write_text((CONF_DIR / "mosquitto.acl").read_text().format(root=self.root))
        conf = (
            (CONF_DIR / "mosquitto.conf")
            .read_text()
            .format(
                user=getpass.getuser(),
                host=self.host,
                port=self.port,
                password_file=password_file,
                acl_file=acl_file,
                data_dir=data_dir,
                log_file=self.log_file,
                max_queued_messages=self.max_queued_messages,
                max_queued_bytes=self.max_queued_bytes,
                max_inflight_messages=self.max_inflight_messages,
                autosave_interval=self.autosave_interval,
            )
        )
        self.conf_file.write_text(conf)

    def ready(self) -> bool:
        return self._tcp_open()

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

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        if not self.rpc_port:
            self.rpc_port = free_port(self.host)
        data_dir = self.home / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        conf = (
            (CONF_DIR / "influxdb.conf")
            .read_text()
            .format(host=self.host, port=self.port, rpc_port=self.rpc_port, data_dir=data_dir)
        )
        conf_file = self.home / "influxdb.conf"
        conf_file.write_text(conf)
        return [find_binary("influxd", "CITYSENSE_INFLUXD_BIN"), "-config", str(conf_file)]

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/ping", timeout=0.5).status_code == 204
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
    ) -> LocalServers:
        return cls(
            mosquitto=Mosquitto(
                "mosquitto", home / "mosquitto", host, mqtt_port or free_port(host), root=root
            ),
            influxdb=InfluxDB("influxdb", home / "influxdb", host, influx_port or free_port(host)),
        )

    def start(self) -> None:
        self.mosquitto.start()
        self.influxdb.start()

    def stop(self) -> None:
        self.mosquitto.stop()
        self.influxdb.stop()
