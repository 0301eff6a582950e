"""What the steps share (`Stack`), and the services they measure as child processes of the
benchmark (citysense.children): the API and the rollup keeper (step 3) and an ingest worker
(step 5), each with a log in the benchmark's folder."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.api.constants import DATABASE, HOST, LATE_AFTER, ROOT, SILENT_AFTER, STALENESS_S
from bench.api.figures import Report
from citysense.children import Child, Children, get_local, start_citysense
from citysense.servers import LocalServers, free_port


@dataclass
class Stack:
    """What the steps work with: the report, the servers, the children this run started (all
    stopped at its end), its folder (logs, registry) and the city's registry."""

    report: Report
    servers: LocalServers
    children: Children
    home: Path
    registry: Path
    keeper: KeeperProcess | None = None  # `citysense rollups`, with --rollups

    def env(self, user: str) -> dict[str, str]:
        """A service's environment: our own, the servers, the registry, the MQTT `user`."""
        return {
            **os.environ,
            "CITYSENSE_INFLUX_URL": self.servers.influxdb.url,
            "CITYSENSE_INFLUX_DB": DATABASE,
            "CITYSENSE_TOPIC_ROOT": ROOT,
            "CITYSENSE_REGISTRY": str(self.registry),
            "CITYSENSE_MQTT_URL": self.servers.mosquitto.url(user),
        }


@dataclass
class ApiProcess:
    child: Child
    port: int
    listening: float  # seconds from start until it answered at all
    loaded: float  # ... until it served, its latest-state cache loaded

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"


def start_api(stack: Stack, extra: dict[str, str]) -> ApiProcess:
    """`citysense api`, authentication off, timed until it listens and until it serves (GET
    /devices answers 200, not 503, once the latest state of every device is loaded)."""
    port = free_port()
    env = {
        **stack.env("citysense-api"),
        "CITYSENSE_API_AUTH": "off",
        "CITYSENSE_API_LATE_AFTER": str(LATE_AFTER),
        "CITYSENSE_API_AGGREGATE_MAX_STALENESS": str(STALENESS_S),
        "CITYSENSE_API_SILENT_AFTER": str(SILENT_AFTER),
        **extra,
    }
    started = time.perf_counter()
    child = stack.children.add(
        start_citysense(
            "api", "--host", HOST, "--port", str(port), "--log-level", "info",
            env=env, log=stack.home / "api.log", name="the API",
        )
    )  # fmt: skip
    listening: list[float] = []
    with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=30) as client:

        def serving() -> bool:
            try:
                status = client.get("/devices", params={"limit": 1}).status_code
            except httpx.TransportError:
                return False
            if not listening:
                listening.append(time.perf_counter() - started)
            if status not in (200, 503):
                raise RuntimeError(f"GET /devices answered {status}:\n{child.tail()}")
            return status == 200

        child.wait_until(serving, 900, "latest state loaded", interval=0.05)
    return ApiProcess(child, port, listening[0], time.perf_counter() - started)


@dataclass
class IngestProcess:
    child: Child
    port: int  # its /ready and /metrics

    def stored_readings(self) -> int:
        text = get_local(f"http://{HOST}:{self.port}/metrics").text
        for line in text.splitlines():
            if line.startswith("citysense_ingest_readings_stored_total "):
                return int(float(line.split()[1]))
        return 0

    def wait_stored(self, count: int, timeout: float) -> None:
        """Until its counter of stored readings reaches `count`, or `timeout` passed."""
        deadline = time.monotonic() + timeout
        while self.stored_readings() < count:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)


def start_ingest(stack: Stack) -> IngestProcess:
    """`citysense ingest`, one worker, awaited until /ready."""
    port = free_port()
    env = {
        **stack.env("citysense-ingest"),
        "CITYSENSE_CLIENT_ID": "bench-ingest",
        "CITYSENSE_HTTP_PORT": str(port),
        "CITYSENSE_SPOOL_DIR": str(stack.home / "spool"),
        "CITYSENSE_LOG_LEVEL": "WARNING",
    }
    log = stack.home / "ingest.log"
    child = stack.children.add(start_citysense("ingest", env=env, log=log, name="ingest"))
    child.wait_http(f"http://{HOST}:{port}/ready", 120)
    return IngestProcess(child, port)


@dataclass
class KeeperProcess:
    """`citysense rollups`, the rollup keeper as a deployment runs it: a process of its own."""

    child: Child
    port: int  # its /metrics and /ready

    def metric(self, name: str) -> float:
        """A sample of its /metrics, the `citysense_rollups_` prefix left off; 0 if absent."""
        text = get_local(f"http://{HOST}:{self.port}/metrics").text
        for line in text.splitlines():
            if line.startswith(f"citysense_rollups_{name} "):
                return float(line.split()[1])
        return 0.0


def start_keeper(stack: Stack, extra: dict[str, str]) -> KeeperProcess:
    """`citysense rollups`, awaited until it listens (its backfill then runs in the background)."""
    port = free_port()
    env = {**stack.env("citysense-api"), "CITYSENSE_API_ROLLUPS_PORT": str(port), **extra}
    log = stack.home / "rollups.log"
    child = stack.children.add(
        start_citysense("rollups", "--log-level", "info", env=env, log=log, name="the keeper")
    )
    child.wait_http(f"http://{HOST}:{port}/live", 120)
    return KeeperProcess(child, port)
