"""End-to-end ingest throughput against a bare paho subscriber, on the same load, in one run.

    .venv/bin/python -m bench.throughput [--messages 100000] [--workers 1 2]

Starts its own Mosquitto and InfluxDB (temporary folder, free ports), generates a simulated city's
load once (simulators.fleet), and replays the same file for each contender:
- baseline: a paho subscriber that only counts (QoS 1, acks on receipt) — the ceiling of any
  Python consumer built on paho — on the same broker and account as ingest, measured with MQTT
  3.1.1 and with MQTT 5 (paho's cost per message differs between them) just before each ingest
  figure; every ingest figure is a ratio against the faster of the two, in the same run (and,
  in backlog mode, a CPU ratio: the counter's CPU per message over ingest's per reading);
- ingest with N workers: decode, validate, enrich, write to InfluxDB, ack after store.
Two measurements of each:
- live: publishers and consumer run together; timed from the first publish until the last
  reading is stored (InfluxDB's /write answered; the count is then checked with a query). This
  is the issue's definition; on a small machine the publishers' own CPU is part of the picture.
- backlog: the load is first queued at the broker for the consumer's persistent session, then
  the consumer is started; timed from its CONNACK (the first worker's) until the last reading
  is stored. The publishers are out of the way, so this is the consumer's own ceiling. Several
  workers are held just before they connect until all are (bench.ingest_gated): started at
  once, they connected up to 1.3 s apart, and the first drained alone meanwhile.
Prints rates and the ratio to the baseline. Run on a quiet machine; figures vary ±10 % run to run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import orjson

from bench.machine import Sampler
from bench.publisher import write_messages
from bench.stages import report as stage_report
from citysense.children import Child, get_local, module_argv, start_citysense, stop_together
from citysense.servers import LocalServers, free_port
from common.influx import InfluxClient, InfluxConfig
from device_profiles import DEFAULT_REGISTRY, load_profiles, load_registry
from simulators.fleet import generate
from wire.topics import TopicLayout

ROOT = "bench"
INGEST = "bench.ingest_gated"  # `citysense ingest`, held before connecting when asked
# What the machine and the servers did during each timed span (bench.machine).
SAMPLER = Sampler()
PUBLISHERS = 2  # one Python publisher tops out below the consumer's rate
REQUIRED = (
    ("streetlight", "powerState"),
    ("water_pipe", "pressure"),
    ("power_meter", "activePower"),
)


def build_load(path: Path, messages: int, array_ratio: float) -> tuple[int, int]:
    """Write `messages` simulated messages; return (messages, readings) as generated."""
    profiles = load_profiles()
    devices = list(load_registry(DEFAULT_REGISTRY, profiles).devices.values())
    per_device = -(-messages // len(devices))
    counts = {"messages": 0, "readings": 0}

    def stream() -> Iterator[tuple[str, bytes]]:
        for msg in generate(
            devices,
            profiles,
            TopicLayout(ROOT),
            readings_per_device=per_device,
            array_ratio=array_ratio,
            fault_ratio=0.0,
            seed=11,
        ):
            if counts["messages"] == messages:
                return
            counts["readings"] += len(msg.readings)
            counts["messages"] += 1
            yield msg.topic, msg.payload

    write_messages(path, stream())
    return counts["messages"], counts["readings"]


def _piped(name: str, module: str, *args: str) -> Child:
    """A helper process of the benchmark: its stdout read by us, its stderr our own."""
    return Child.start(
        module_argv(module, *args), name=name, log=None, stdout=subprocess.PIPE, text=True
    )


def run_publishers(servers: LocalServers, load: Path) -> float:
    """Replay the load from PUBLISHERS processes at once; the wall time of the first publish."""
    url = servers.mosquitto.url("citysense-simulator")
    procs = [
        _piped(f"publisher {k}", "bench.publisher", url, str(load), str(k), str(PUBLISHERS))
        for k in range(PUBLISHERS)
    ]
    for proc in procs:
        SAMPLER.watch("publishers", proc.proc.pid)  # inside a live run's span
    results = [orjson.loads(p.proc.communicate()[0].strip().splitlines()[-1]) for p in procs]
    return float(min(r["started"] for r in results))


PROTOCOLS = ("3.1.1", "5")  # bench.counter's names for the MQTT versions


def counter(servers: LocalServers, expected: int, client_id: str, protocol: str) -> Child:
    url = servers.mosquitto.url("citysense-ingest")
    topic = f"{ROOT}/+/+/telemetry"
    child = _piped("counter", "bench.counter", url, topic, str(expected), client_id, protocol)
    SAMPLER.watch("counter", child.proc.pid)
    assert child.proc.stdout is not None
    assert child.proc.stdout.readline().strip() == "ready"
    return child


def counted(child: Child, messages: int) -> dict[str, float]:
    assert child.proc.stdout is not None
    result: dict[str, float] = orjson.loads(child.proc.stdout.readline())
    child.proc.wait(30)
    assert result["messages"] == messages, result
    return result


def baseline(
    servers: LocalServers, load: Path, messages: int, backlog: bool, protocol: str
) -> tuple[float, float, str]:
    """The bare counter's rate (messages/s), in backlog mode its CPU per message (µs) and what
    the machine did meanwhile."""
    client_id = f"bench-count-{time.time_ns()}"
    if backlog:
        counted(counter(servers, 0, client_id, protocol), 0)  # leaves its session to queue into
        run_publishers(servers, load)
        result = counted(counter(servers, messages, client_id, protocol), messages)
        cpu = result["cpu_last"] - result["cpu_connected"]
        span = SAMPLER.span(result["connected"], result["last"]).describe(messages)
        return messages / (result["last"] - result["connected"]), cpu * 1e6 / messages, span
    proc = counter(servers, messages, client_id, protocol)
    started = run_publishers(servers, load)
    last = counted(proc, messages)["last"]
    return messages / (last - started), float("nan"), SAMPLER.span(started, last).describe(messages)


def baselines(servers: LocalServers, load: Path, messages: int, mode: str) -> tuple[float, float]:
    """Both protocol versions measured now, printed; the faster's rate and CPU per message."""
    bases = {p: baseline(servers, load, messages, mode == "backlog", p) for p in PROTOCOLS}
    for protocol, (rate, cpu_us, span) in bases.items():
        print(
            f"{mode:8} baseline: bare paho subscriber, MQTT {protocol:5}, counts only  "
            f"{rate:9,.0f} msg/s  ({cpu_us:.0f} µs CPU per message)\n          {span}"
        )
    fastest = max(bases, key=lambda p: bases[p][0])
    return bases[fastest][:2]


def _metric(ports: list[int], name: str) -> float:
    """The sum over the workers of one of their metrics (citysense_ingest_<name>)."""
    total = 0.0
    for port in ports:
        text = get_local(f"http://127.0.0.1:{port}/metrics").text
        for line in text.splitlines():
            if line.startswith(f"citysense_ingest_{name} "):
                total += float(line.split()[1])
    return total


def _metric_max(ports: list[int], name: str) -> float:
    """The largest value over the workers of one of their gauges."""
    found = []
    for port in ports:
        text = get_local(f"http://127.0.0.1:{port}/metrics").text
        found += [
            float(line.split()[1])
            for line in text.splitlines()
            if line.startswith(f"citysense_ingest_{name} ")
        ]
    if not found:
        raise RuntimeError(f"no worker reports citysense_ingest_{name}")
    return max(found)


def _stored(ports: list[int]) -> int:
    return int(_metric(ports, "readings_stored_total"))


THREADS = ("mqtt_thread", "writer_thread")  # the workers' own CPU gauges, per thread


def _connected_at(log: Path) -> float:
    """Wall time of the worker's CONNACK, from its own structured log."""
    for line in log.read_text().splitlines():
        entry = orjson.loads(line)
        if str(entry.get("msg", "")).startswith("connected to"):
            return datetime.fromisoformat(entry["ts"]).timestamp()
    raise RuntimeError(f"no connect line in {log}")


def _open_when_all_wait(gate: Path, procs: list[Child], timeout: float = 60.0) -> None:
    """Create `gate` once every worker has announced it waits for it (`gate`.<pid>)."""
    waiting = [Path(f"{gate}.{child.proc.pid}") for child in procs]
    deadline = time.monotonic() + timeout
    while not all(path.exists() for path in waiting):
        for child in procs:
            if child.proc.poll() is not None:
                raise RuntimeError(f"{child.name} exited before it connected")
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers not at the gate after {timeout:.0f} s")
        time.sleep(0.01)
    gate.touch()


class Workers:
    """N ingest processes on one shared subscription (or one plain subscriber)."""

    def __init__(
        self,
        servers: LocalServers,
        database: str,
        count: int,
        home: Path,
        module: str = INGEST,
    ) -> None:
        self.module = module
        self.ports = [free_port() for _ in range(count)]
        self.logs = [home / f"{database}-{n}.log" for n in range(count)]
        self.envs = [
            {
                **os.environ,
                "CITYSENSE_MQTT_URL": servers.mosquitto.url("citysense-ingest"),
                "CITYSENSE_INFLUX_URL": servers.influxdb.url,
                "CITYSENSE_INFLUX_DB": database,
                "CITYSENSE_TOPIC_ROOT": ROOT,
                "CITYSENSE_CLIENT_ID": f"{database}-{n}",
                # A group per run: stopped workers keep their sessions, and Mosquitto keeps
                # dealing them a share of the group's messages.
                "CITYSENSE_SHARE_GROUP": database if count > 1 else "",
                "CITYSENSE_HTTP_PORT": str(port),
                "CITYSENSE_SPOOL_DIR": str(home / "spool"),
                "CITYSENSE_LOG_LEVEL": "INFO",
                # The pass-through worker skips duplicate detection too.
                **({"CITYSENSE_DEDUPE_WINDOW": "0"} if module != INGEST else {}),
            }
            for n, port in enumerate(self.ports)
        ]
        self.procs: list[Child] = []

    def start(self, gate: Path | None = None) -> None:
        """Every worker at once, each with a fresh log; then each awaited until /ready. With
        `gate`, each is held before it connects until all are there (bench.ingest_gated)."""
        for n, (env, log) in enumerate(zip(self.envs, self.logs, strict=True)):
            proc = start_citysense(
                "ingest",
                module=self.module,
                env={**env, "CITYSENSE_BENCH_GO": str(gate)} if gate else env,
                log=log,
                fresh_log=True,
                name=f"ingest worker {n}",
            )
            SAMPLER.watch("ingest", proc.proc.pid)
            self.procs.append(proc)
        if gate is not None:
            _open_when_all_wait(gate, self.procs)
        for proc, port in zip(self.procs, self.ports, strict=True):
            proc.wait_http(f"http://127.0.0.1:{port}/ready", 30)

    def stop(self) -> None:
        """SIGTERM to all, then wait for each to drain and exit."""
        stop_together(self.procs, 30)
        self.procs = []

    def cpu_seconds(self) -> float:
        return sum(p.cpu_seconds() for p in self.procs)


def pipeline(
    servers: LocalServers,
    load: Path,
    readings: int,
    workers: int,
    home: Path,
    *,
    backlog: bool,
    module: str = INGEST,
) -> tuple[float, float, dict[str, float]]:
    database = f"bench_{workers}w_{'backlog' if backlog else 'live'}_{time.time_ns()}"
    group = Workers(servers, database, workers, home, module)
    group.start()
    if backlog:
        # What starting costs (imports, contract) is not the readings' cost: take it from an
        # idle start, then stop; the sessions stay at the broker and queue the load.
        cpu_before = group.cpu_seconds()
        group.stop()
        run_publishers(servers, load)
        group.start(gate=home / f"{database}.go")
        started = min(_connected_at(log) for log in group.logs)
    else:
        cpu_before = group.cpu_seconds()
        started = run_publishers(servers, load)
    while _stored(group.ports) < readings:
        # Each look renders the workers' whole /metrics and parses it here: every 50 ms this
        # process took 17-37 % of a core of the two the run has (sampled from /proc), and
        # the workers 3-5 % of theirs. The end is the workers' own (below), so look rarely.
        time.sleep(0.5)
    # When the last batch was stored, by the workers' clocks (the counter's baseline times its
    # last message itself too).
    finished = _metric_max(group.ports, "last_stored_timestamp_seconds")
    if workers > 1:
        _print_shares(group, started)
    print(f"          {SAMPLER.span(started, finished).describe(readings)}")
    cpu = group.cpu_seconds() - cpu_before
    per_thread = {t: _metric(group.ports, f"cpu_seconds_{t}") * 1e6 / readings for t in THREADS}
    group.stop()
    _check_stored(servers, database, readings)
    return readings / (finished - started), cpu * 1e6 / readings, per_thread


def _print_shares(group: Workers, started: float) -> None:
    """Each worker's share of the readings and its own span, from the first connect: the
    broker deals a shared subscription's queued messages out, and an uneven deal or a late
    connect leaves one worker draining alone."""
    for n, (port, log) in enumerate(zip(group.ports, group.logs, strict=True)):
        stored = _stored([port])
        last = _metric_max([port], "last_stored_timestamp_seconds")
        print(
            f"          worker {n}: {stored:,} readings, connected at "
            f"+{_connected_at(log) - started:.2f} s, last stored at +{last - started:.2f} s"
        )


def _check_stored(servers: LocalServers, database: str, readings: int) -> None:
    with InfluxClient(InfluxConfig(url=servers.influxdb.url, database=database)) as client:
        stored = sum(
            int(s.values[0][1])
            for name, field in REQUIRED
            for s in client.query(f'SELECT count("{field}") FROM "{name}"')[0]
        )
    assert stored == readings, f"stored {stored} of {readings}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument(
        "--array-ratio",
        type=float,
        default=0.0,
        help="share of array messages (0 keeps messages = readings)",
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument(
        "--modes", nargs="+", choices=["live", "backlog"], default=["live", "backlog"]
    )
    parser.add_argument(
        "--validation",
        action="store_true",
        help="also run ingest with validation replaced by a pass-through (bench/ only), to "
        "show what validating costs",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="citysense-bench-") as tmp:
        home = Path(tmp)
        servers = LocalServers.create(home / "servers", root=ROOT)
        servers.start()
        try:
            SAMPLER.start()
            SAMPLER.watch("broker", servers.mosquitto.pid)
            SAMPLER.watch("InfluxDB", servers.influxdb.pid)
            load = home / "load.bin"
            messages, readings = build_load(load, args.messages, args.array_ratio)
            print(
                f"load: {messages} messages, {readings} readings, QoS 1, "
                f"{PUBLISHERS} publisher processes, {os.cpu_count()} CPUs"
            )
            print("CPU per reading by stage, in this process (bench.stages):")
            print("\n".join(stage_report(ROOT, load, readings)))
            for mode in args.modes:
                _compare(servers, load, (messages, readings), mode, args)
        finally:
            SAMPLER.stop()
            servers.stop()


def _compare(
    servers: LocalServers, load: Path, sizes: tuple[int, int], mode: str, args: argparse.Namespace
) -> None:
    messages, readings = sizes
    backlog = mode == "backlog"
    for workers in args.workers:
        # Measured again before each figure: this machine is shared, and a baseline taken
        # minutes earlier may have run on a quieter or a busier machine than the figure.
        base, base_us = baselines(servers, load, messages, mode)
        home = load.parent
        rate, cpu_us, threads = pipeline(servers, load, readings, workers, home, backlog=backlog)
        print(
            f"{mode:8} ingest, {workers} worker(s), stored in InfluxDB "
            f"{rate:9,.0f} readings/s  ratio {rate / base:.2f} to the faster baseline just "
            f"before, CPU ratio {base_us / cpu_us:.2f}  "
            f"({cpu_us:.0f} µs ingest CPU per reading: "
            + ", ".join(f"{t.replace('_', ' ')} {us:.0f}" for t, us in threads.items())
            + f", other threads {cpu_us - sum(threads.values()):.0f})"
        )
        if args.validation:
            bare, bare_us, _ = pipeline(
                servers,
                load,
                readings,
                workers,
                home,
                backlog=backlog,
                module="bench.ingest_unvalidated",
            )
            print(
                f"{mode:8} same, validation replaced by a pass-through  {bare:9,.0f} readings/s"
                f"  validating costs {1 - rate / bare:.0%} of throughput "
                f"({cpu_us - bare_us:.0f} µs CPU per reading)"
            )


if __name__ == "__main__":
    main()
