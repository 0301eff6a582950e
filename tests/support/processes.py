"""`citysense ingest` and `citysense rollups` as real processes (so they can be SIGKILLed), the
environments they run in, and what /proc says about processes."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import httpx

from citysense.children import get_local
from citysense.servers import LocalServers, free_port, port_range
from common.influx import InfluxConfig
from common.process import die_with_parent
from tests.support.influx import count
from tests.support.polling import wait_for


def ingest_env(
    stack: LocalServers,
    influx: InfluxConfig,
    root: str,
    tmp: Path,
    *,
    name: str = "fault",
    **extra: str | None,
) -> dict[str, str]:
    """The environment of an ingest process on `stack` and `influx`, reading under `root`, its
    spool in `tmp`, client id `<name>-<the root's last 8 characters>`. `extra` adds or replaces
    variables; None leaves one as the environment has it (not set here)."""
    own = {
        "CITYSENSE_MQTT_URL": stack.mosquitto.url("citysense-ingest"),
        "CITYSENSE_INFLUX_URL": influx.url,
        "CITYSENSE_INFLUX_DB": influx.database,
        "CITYSENSE_TOPIC_ROOT": root,
        "CITYSENSE_CLIENT_ID": f"{name}-{root[-8:]}",
        # Not a kernel-given free port: an outgoing connection may take it before ingest binds
        # it ("Address already in use" once, test_6): free_port draws below that range.
        "CITYSENSE_HTTP_PORT": str(free_port()),
        "CITYSENSE_SPOOL_DIR": str(tmp / "spool"),
        "CITYSENSE_RETRY_MAX": "1",
        "CITYSENSE_LOG_LEVEL": "WARNING",
        **extra,
    }
    return {**os.environ, **{k: v for k, v in own.items() if v is not None}}


def free_port_block(count: int, host: str = "127.0.0.1") -> int:
    """A base port with `count` ports from it free, for a supervisor whose worker n listens on
    base + n (one port: citysense.servers.free_port). Drawn from the same range below the
    kernel's ephemeral one: base + 1 chosen next to a kernel-given base was taken by another
    test process's server once ("Address already in use", the worker never ready)."""
    ports = port_range()
    for _ in range(200):
        base = random.randrange(ports.start, ports.stop - count)
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {count} free consecutive ports found")


class CitysenseProcess:
    """A `citysense <command>` child process, its output appended to `log`: what IngestProcess
    and RollupsProcess share. Every one started is killed at the end of its test by the
    `ingest_processes` fixture (kill_all), pass or fail, and dies with the test run even if
    pytest itself is killed before teardown (PR_SET_PDEATHSIG)."""

    started: ClassVar[list[subprocess.Popen[bytes]]] = []

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def kill_all(cls) -> None:
        for proc in cls.started:
            if proc.poll() is None:
                proc.kill()  # a supervisor's workers die with it (PR_SET_PDEATHSIG)
                proc.wait()
        cls.started.clear()

    def _spawn(self, *args: str) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "citysense.cli", *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - prctl only, no locks taken
            )
        CitysenseProcess.started.append(self.proc)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def pause(self) -> None:
        """Frozen where it is (SIGSTOP): its work and its HTTP server stop until resume()."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


def _sample(url: str, prefix: str, name: str) -> float:
    """The value of the sample `prefix` + `name` on the /metrics at `url`; KeyError(name)."""
    for line in get_local(url).text.splitlines():
        if line.startswith(f"{prefix}{name} "):
            return float(line.split()[1])
    raise KeyError(name)


class IngestProcess(CitysenseProcess):
    """`citysense ingest` as a real process, so it can be SIGKILLed."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        super().__init__(env, log)
        self.args = args

    @property
    def port(self) -> str:
        return self.env["CITYSENSE_HTTP_PORT"]

    def start(self, wait_ready: bool = True) -> None:
        self._spawn("ingest", *self.args)
        if wait_ready:
            wait_for(self.ready, 30, what="ingest /ready")

    def ready(self, port: str | None = None) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            url = f"http://127.0.0.1:{port or self.port}/ready"
            return get_local(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def metric(self, name: str, port: str | None = None) -> float:
        return _sample(f"http://127.0.0.1:{port or self.port}/metrics", "citysense_ingest_", name)

    def metrics(self, port: str | None = None) -> dict[str, float]:
        """Every sample on /metrics by its name, labels included and the `citysense_ingest_`
        prefix left off: `received_total`, `rejected_total{profile="x",reason="y"}`."""
        text = get_local(f"http://127.0.0.1:{port or self.port}/metrics").text
        samples = {}
        for line in text.splitlines():
            if line.startswith("citysense_ingest_"):
                name, value = line.removeprefix("citysense_ingest_").rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    def holds_nothing(self, port: str | None = None) -> bool:
        """No message unacknowledged, no line buffered, no byte held: all it took is written."""
        m = self.metrics(port)
        return m["unacked_messages"] == m["buffered_lines"] == m["held_bytes"] == 0

    def status(self, path: str, port: str | None = None) -> int:
        """The HTTP status ingest answers on `path` (/ready, /live)."""
        return get_local(f"http://127.0.0.1:{port or self.port}{path}").status_code


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def children(pid: int) -> list[int]:
    """Direct child processes of `pid`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def rollups_env(influx: InfluxConfig, registry: Path, **extra: str) -> dict[str, str]:
    """The environment of a `citysense rollups` process on `influx`, with `registry`, its
    /metrics on a free port. `extra` adds or replaces variables."""
    own = {
        "CITYSENSE_INFLUX_URL": influx.url,
        "CITYSENSE_INFLUX_DB": influx.database,
        "CITYSENSE_REGISTRY": str(registry),
        "CITYSENSE_API_ROLLUPS_PORT": str(free_port()),  # as ingest_env's port
        **({"CITYSENSE_INFLUX_TOKEN": influx.token} if influx.token else {}),
        **extra,
    }
    return {**os.environ, **own}


class RollupsProcess(CitysenseProcess):
    """`citysense rollups` as a real process, so it can be SIGKILLed or paused."""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.env['CITYSENSE_API_ROLLUPS_PORT']}"

    def start(self) -> None:
        self._spawn("rollups", "--log-level", "warning")

    def status(self, path: str) -> int | None:
        """The status it answers on `path`; None while it does not listen."""
        assert self.proc is not None
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            return get_local(f"{self.base}{path}", timeout=2).status_code
        except httpx.HTTPError:
            return None

    def wait_ready(self, timeout: float = 60) -> None:
        wait_for(lambda: self.status("/ready") == 200, timeout, 0.05, "rollups /ready")

    def metric(self, name: str) -> float:
        """A sample of its /metrics, the `citysense_rollups_` prefix left off."""
        return _sample(f"{self.base}/metrics", "citysense_rollups_", name)


def wait_written(influx: InfluxConfig, ingest: IngestProcess, measurement: str, n: int) -> None:
    """`n` points of `measurement` stored, and ingest holding nothing: the change marks (and
    latest rows) of their batches, written after the readings and before the acknowledgement,
    are stored too — a question asked between the readings and the marks finds nothing moved."""
    wait_for(lambda: count(influx, measurement) >= n, 30, 0.2, f"{n} {measurement} readings")
    wait_for(ingest.holds_nothing, 30, 0.2, what="every batch acknowledged")


def started_ingest(
    stack: LocalServers, influx: InfluxConfig, root: str, tmp: Path, **extra: str | None
) -> IngestProcess:
    """An ingest process as `ingest_env` sets it up (`extra` on top), ready, its log in `tmp`."""
    ingest = IngestProcess(ingest_env(stack, influx, root, tmp, **extra), tmp / "i.log")
    ingest.start()
    return ingest


def holding_ingest(
    stack: LocalServers, influx: InfluxConfig, root: str, tmp: Path, **extra: str | None
) -> IngestProcess:
    """An ingest process started without a disk spool: what it takes and cannot store it holds
    (the fault suite's outage scenarios)."""
    return started_ingest(stack, influx, root, tmp, CITYSENSE_SPOOL_DIR="", **extra)
