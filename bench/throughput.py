"""End-to-end ingest throughput against a bare paho subscriber, on the same load, in one run.

    .venv/bin/python -m bench.throughput [--messages 100000] [--workers 1 2]

Starts its own Mosquitto and InfluxDB (temporary folder, free ports), generates a simulated city's
load once, and replays the same file for each contender:
- baseline: a paho subscriber that only counts (QoS 1, acks on receipt) — the ceiling of any
  Python consumer built on paho;
- ingest with N workers: decode, validate, enrich, write to InfluxDB, ack after store. Timed from
  the first publish until the last reading is stored (InfluxDB's /write answered; the count is
  then checked with a query).
Prints rates and the ratio to the baseline. Run on a quiet machine; figures vary ±10 % run to run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from bench.publisher import write_messages
from citysense.influx import InfluxClient, InfluxConfig
from citysense.servers import LocalServers, free_port
from device_profiles import DEFAULT_REGISTRY, TopicLayout, load_profiles, load_registry
from simulators.fleet import generate

ROOT = "bench"


def build_load(path: Path, messages: int, array_ratio: float) -> tuple[int, int]:
    """Write `messages` simulated messages; return (messages, readings) as generated."""
    profiles = load_profiles()
    registry = load_registry(DEFAULT_REGISTRY, profiles)
    devices = list(registry.devices.values())
    per_device = -(-messages // len(devices))
    readings = 0
    written = 0

    def stream() -> object:
        nonlocal readings, written
        for msg in generate(devices, profiles, TopicLayout(ROOT), readings_per_device=per_device,
                            array_ratio=array_ratio, fault_ratio=0.0, seed=11):
            if written == messages:
                return
            readings += len(msg.readings)
            written += 1
            yield msg.topic, msg.payload

    write_messages(path, stream())  # type: ignore[arg-type]
    return written, readings


def run_publisher(servers: LocalServers, load: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.publisher", servers.mosquitto.url("citysense-simulator"),
         str(load)], check=True, capture_output=True, text=True,
    )
    result: dict[str, float] = orjson.loads(out.stdout.strip().splitlines()[-1])
    return result


def baseline(servers: LocalServers, load: Path, messages: int) -> float:
    counter = subprocess.Popen(
        [sys.executable, "-m", "bench.counter", servers.mosquitto.url("citysense-ingest"),
         f"{ROOT}/+/+/telemetry", str(messages)], stdout=subprocess.PIPE, text=True,
    )
    assert counter.stdout is not None
    assert counter.stdout.readline().strip() == "ready"
    published = run_publisher(servers, load)
    result = orjson.loads(counter.stdout.readline())
    counter.wait(30)
    assert result["messages"] == messages, result
    return messages / (result["last"] - published["started"])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stored(ports: list[int]) -> int:
    total = 0
    for port in ports:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith("citysense_ingest_readings_stored_total "):
                total += int(float(line.split()[1]))
    return total


def pipeline(servers: LocalServers, load: Path, readings: int, workers: int, home: Path
             ) -> tuple[float, float]:
    database = f"bench_{workers}w_{time.time_ns()}"
    ports = [free_port() for _ in range(workers)]
    procs = []
    for n, port in enumerate(ports):
        env = {
            **os.environ,
            "CITYSENSE_MQTT_URL": servers.mosquitto.url("citysense-ingest"),
            "CITYSENSE_INFLUX_URL": servers.influxdb.url,
            "CITYSENSE_INFLUX_DB": database,
            "CITYSENSE_TOPIC_ROOT": ROOT,
            "CITYSENSE_CLIENT_ID": f"bench-ingest-{database}-{n}",
            "CITYSENSE_SHARE_GROUP": "bench" if workers > 1 else "",
            "CITYSENSE_HTTP_PORT": str(port),
            "CITYSENSE_LOG_LEVEL": "WARNING",
        }
        with (home / f"ingest-{database}-{n}.log").open("wb") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "citysense.cli", "ingest"],
                                          env=env, stdout=log, stderr=subprocess.STDOUT))
    for port in ports:
        _wait_ready(port)
    cpu_before = sum(_cpu_seconds(p.pid) for p in procs)
    published = run_publisher(servers, load)
    while _stored(ports) < readings:
        time.sleep(0.05)
    finished = time.time()
    cpu = sum(_cpu_seconds(p.pid) for p in procs) - cpu_before
    for proc in procs:
        proc.terminate()
        proc.wait(30)
    with InfluxClient(InfluxConfig(url=servers.influxdb.url, database=database)) as client:
        stored = sum(
            int(s.values[0][1])
            for name, field in (("streetlight", "powerState"), ("water_pipe", "pressure"),
                                ("power_meter", "activePower"))
            for s in client.query(f'SELECT count("{field}") FROM "{name}"')[0]
        )
    assert stored == readings, f"stored {stored} of {readings}"
    return readings / (finished - published["started"]), cpu * 1e6 / readings


def _wait_ready(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"ingest on :{port} not ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--array-ratio", type=float, default=0.0,
                        help="share of array messages (0 keeps messages = readings)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="citysense-bench-") as tmp:
        home = Path(tmp)
        servers = LocalServers.create(home / "servers", root=ROOT)
        servers.start()
        try:
            load = home / "load.bin"
            messages, readings = build_load(load, args.messages, args.array_ratio)
            print(f"load: {messages} messages, {readings} readings, QoS 1")
            base = baseline(servers, load, messages)
            print(f"baseline  bare paho subscriber (counts only):  {base:10,.0f} msg/s")
            for workers in args.workers:
                rate, cpu_us = pipeline(servers, load, readings, workers, home)
                print(f"ingest    {workers} worker(s), stored in InfluxDB:     {rate:10,.0f} "
                      f"readings/s  ratio {rate / base:.2f}  ({cpu_us:.0f} µs CPU per reading)")
        finally:
            servers.stop()


if __name__ == "__main__":
    main()
