"""The city-brain API at city scale: a benchmark, not a test (issue 5).

    .venv/bin/python -m bench.api_bench                      # 100,000 devices, ~5-10 minutes
    .venv/bin/python -m bench.api_bench --devices 20000 --quick

Starts its own Mosquitto and InfluxDB (temporary folder, free ports) and, step by step:
1. writes a registry of `--devices` devices over 6 districts (simulators.city: 60 % streetlights,
   20 % water-pipe nodes, 20 % power meters);
2. loads `--hours` of history straight into InfluxDB as line protocol (not through MQTT): every
   device gets one reading every `--history-every` seconds, the newest within a minute of the
   load, values from the simulators' device models (lamps follow dusk and dawn, counters grow);
3. starts the API as its own process (`citysense api`, authentication off) and times its start
   until it serves with its latest-state cache rebuilt from InfluxDB;
4. times requests from one client (and one concurrent run): a district's latest state paged at
   the maximum page size, one device, the GeoJSON of every streetlight, aggregations across
   devices over 24 h (gauges per district per hour / 15 min, lamps on, energy per district per
   day) — each asked first once, then again (kept cells, api.cells); with --warm (the default)
   the API was told to keep these questions warm and the first ask comes after its warm-up —
   and a device's 24 h history;
5. opens `--sse-clients` Server-Sent-Events streams, starts an ingest worker and publishes live
   readings over MQTT at `--sse-rate` readings/s for `--sse-seconds`, and measures delivery:
   latency from the reading's timestamp (the moment it was published) to its event arriving at
   each client, and whether every client got every event; then asks the aggregates again,
   after live ingest touched their current windows;
6. prints a table of all figures and stops everything it started.

Reporting status thresholds are widened for the API (CITYSENSE_API_LATE_AFTER/SILENT_AFTER) so
no device of the loaded city turns late or silent during the run: the history has no live
readings behind it, and 60,000 lamps going silent at once mid-measurement would be a different
benchmark. Everything runs on this one machine; the figures include the clients' own CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from citysense.servers import LocalServers, free_port
from common.influx import InfluxClient, InfluxConfig
from common.mqtturl import MqttUrl
from common.process import die_with_parent
from device_profiles import Device, load_profiles, load_registry
from simulators.city import DISTRICTS, write_city
from simulators.fleet import LIVE, ExpectedReading, SimMessage, generate
from simulators.models import DEFAULT_UTC_OFFSET_HOURS, ProfileModel
from simulators.publish import publish
from wire.lineproto import fields as encode_fields
from wire.lineproto import tag as encode_tag
from wire.topics import TopicLayout

ROOT = "bench"
DATABASE = "citysense_bench"
HOST = "127.0.0.1"
WRITE_BATCH = 5_000  # lines per /write
LATEST_SPREAD_S = 60  # the newest reading of each device lies within this much before the load
STALENESS_S = 30.0  # the API's default: a changed aggregate cell is served up to this old
LATE_AFTER, SILENT_AFTER = 60.0, 120.0  # x reporting interval: streetlights late after 1 h
S = 1_000_000_000


# --- figures -----------------------------------------------------------------------------------


@dataclass
class Timings:
    seconds: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # requests that failed (not timed)

    def add(self, seconds: float, size: int = 0) -> None:
        self.seconds.append(seconds)
        self.sizes.append(size)


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def section(self, title: str) -> None:
        self.rows.append((title, "", ""))

    def add(self, what: str, figure: str, note: str = "") -> None:
        self.rows.append(("  " + what, figure, note))
        print(f"  {what}: {figure}  {note}".rstrip(), flush=True)

    def timings(self, what: str, t: Timings, note: str = "") -> None:
        s = t.seconds
        if t.errors:
            note = f"{len(t.errors)} FAILED: {t.errors[0]}" + (f"; {note}" if note else "")
        if not s:
            self.add(what, "no successful request", note)
            return
        size = statistics.mean(t.sizes) if t.sizes else 0
        figure = f"p50 {ms(pct(s, 50))}  p99 {ms(pct(s, 99))}  max {ms(max(s))}  n={len(s)}"
        extra = (
            f"{size / 1e6:,.1f} MB/response"
            if size >= 1e6
            else (f"{size / 1e3:,.1f} kB/response" if size else "")
        )
        self.add(what, figure, "; ".join(x for x in (extra, note) if x))

    def print(self) -> None:
        width = max(len(r[0]) for r in self.rows) + 2
        fig = max(len(r[1]) for r in self.rows) + 2
        print("\n" + "=" * (width + fig + 40))
        for what, figure, note in self.rows:
            if not figure:
                print(f"\n{what}")
            else:
                print(f"{what:<{width}}{figure:<{fig}}{note}")
        print("=" * (width + fig + 40), flush=True)


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024**2:.0f} GiB RAM"
    return f"{os.cpu_count()} CPUs ({model}){mem}, Python {platform.python_version()}"


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def _idle_ticks() -> int:
    """Idle CPU time of the whole machine, in clock ticks (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[4]) + int(fields[5])  # idle + iowait


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- child processes ---------------------------------------------------------------------------


class Children:
    """Processes this benchmark started; all stopped in `stop_all`, and each dies with us."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []

    def start(
        self, args: list[str], env: dict[str, str], log: Path, **kw: Any
    ) -> subprocess.Popen[Any]:
        with log.open("ab") as out:
            proc: subprocess.Popen[Any] = subprocess.Popen(
                args,
                env=env,
                stdout=kw.pop("stdout", out),
                stderr=out,
                start_new_session=True,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - prctl only
                **kw,
            )
        self.procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        self.procs = []


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


# --- 2. history -----------------------------------------------------------------------------------


Row = tuple[int, str, str, str]  # index, device_id, profile, district


def _history_part(job: tuple[str, list[Row], int, int, int]) -> tuple[int, int]:
    """Write the history of some devices; (points, bytes). Runs in a worker process."""
    influx_url, rows, now_ms, steps, every_s = job
    profiles = load_profiles()
    models = {n: ProfileModel(p, DEFAULT_UTC_OFFSET_HOURS) for n, p in profiles.items()}
    points = size = 0
    lines: list[str] = []
    with InfluxClient(InfluxConfig(url=influx_url, database=DATABASE, timeout=120)) as client:

        def flush() -> None:
            nonlocal size
            body = ("\n".join(lines)).encode()
            client.write(body)
            size += len(body)
            lines.clear()

        for index, device_id, profile_name, district in rows:
            profile = profiles[profile_name]
            rng = random.Random(index)
            model = models[profile_name].device(rng)
            spread_ms = int(min(profile.reporting_interval, LATEST_SPREAD_S) * 1000)
            newest = now_ms - rng.randrange(spread_ms)
            series = (
                f"{encode_tag(profile.measurement)},device_id={encode_tag(device_id)},"
                f"district={encode_tag(district)} "
            )
            for k in range(steps, -1, -1):  # oldest first: the models integrate counters
                ts = newest - k * every_s * 1000
                lines.append(f"{series}{encode_fields(model.reading(ts))} {ts * 1_000_000}")
            points += steps + 1
            if len(lines) >= WRITE_BATCH:
                flush()
        if lines:
            flush()
    return points, size


def load_history(
    servers: LocalServers, devices: Sequence[Device], hours: float, every_s: int, processes: int
) -> tuple[int, int, float]:
    with InfluxClient(InfluxConfig(url=servers.influxdb.url, database=DATABASE)) as client:
        client.create_database()
    rows: list[Row] = [(n, d.device_id, d.profile, d.district) for n, d in enumerate(devices)]
    steps = int(hours * 3600 // every_s)
    now_ms = time.time_ns() // 1_000_000
    parts = max(processes * 8, 1)
    jobs = [(servers.influxdb.url, rows[k::parts], now_ms, steps, every_s) for k in range(parts)]
    started = time.perf_counter()
    # fork: nothing but the servers (separate processes) exists yet, no threads to copy.
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        results = list(pool.imap_unordered(_history_part, jobs))
    seconds = time.perf_counter() - started
    return sum(r[0] for r in results), sum(r[1] for r in results), seconds


def count_stored(servers: LocalServers) -> dict[str, int]:
    counted = {}
    with InfluxClient(InfluxConfig(url=servers.influxdb.url, database=DATABASE, timeout=120)) as c:
        for measurement, fld in (
            ("streetlight", "powerState"),
            ("water_pipe", "pressure"),
            ("power_meter", "activePower"),
        ):
            series = c.query(f'SELECT count("{fld}") FROM "{measurement}"')[0]
            counted[measurement] = int(series[0].values[0][1]) if series else 0
    return counted


# --- 3. the API process ---------------------------------------------------------------------


def common_env(servers: LocalServers, registry: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CITYSENSE_INFLUX_URL": servers.influxdb.url,
        "CITYSENSE_INFLUX_DB": DATABASE,
        "CITYSENSE_TOPIC_ROOT": ROOT,
        "CITYSENSE_REGISTRY": str(registry),
    }


def start_api(
    children: Children, servers: LocalServers, registry: Path, home: Path, extra: dict[str, str]
) -> tuple[subprocess.Popen[Any], str, float, float, Path]:
    """The API process; (process, base URL, seconds until it listens, until its cache is loaded,
    log)."""
    port = free_port()
    env = {
        **common_env(servers, registry),
        "CITYSENSE_MQTT_URL": servers.mosquitto.url("citysense-api"),
        "CITYSENSE_API_AUTH": "off",
        "CITYSENSE_API_LATE_AFTER": str(LATE_AFTER),
        "CITYSENSE_API_AGGREGATE_MAX_STALENESS": str(STALENESS_S),
        "CITYSENSE_API_SILENT_AFTER": str(SILENT_AFTER),
        **extra,
    }
    log = home / "api.log"
    started = time.perf_counter()
    proc = children.start(
        [
            sys.executable, "-m", "citysense.cli", "api",
            "--host", HOST, "--port", str(port), "--log-level", "info",
        ],
        env,
        log,
    )  # fmt: skip
    base = f"http://{HOST}:{port}"
    listening = None
    deadline = time.monotonic() + 900
    with httpx.Client(base_url=base, timeout=30) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the API exited with {proc.returncode}:\n{tail(log)}")
            try:
                status = client.get("/devices", params={"limit": 1}).status_code
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            if listening is None:
                listening = time.perf_counter() - started
            if status == 200:
                return proc, base, listening, time.perf_counter() - started, log
            if status != 503:
                raise RuntimeError(f"GET /devices answered {status}:\n{tail(log)}")
            time.sleep(0.05)
    raise RuntimeError(f"the API did not load its state in 900 s:\n{tail(log)}")


# --- 4. requests ----------------------------------------------------------------------------


def wait_for_line(log: Path, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if text in line:
                return line
        time.sleep(0.5)
    raise RuntimeError(f"no {text!r} in the API log within {timeout:g} s:\n{tail(log)}")


def timed_get(
    client: httpx.Client, path: str, params: dict[str, Any]
) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = client.get(path, params=params)
    seconds = time.perf_counter() - started
    if response.status_code != 200:
        raise Failed(f"{response.status_code} {response.text[:300]}")
    return seconds, response


class Failed(Exception):
    pass


def run_requests(
    client: httpx.Client, path: str, params: Iterator[dict[str, Any]] | list[dict[str, Any]],
    *, warmup: int = 1, check: Callable[[httpx.Response], None] | None = None,
) -> Timings:  # fmt: skip
    """Time each request; the first `warmup` are not counted. A failed request (an error status,
    a timeout) is recorded and the rest go on."""
    t = Timings()
    for n, p in enumerate(params):
        try:
            seconds, response = timed_get(client, path, p)
        except (Failed, httpx.TimeoutException) as exc:
            t.errors.append(str(exc)[:160])
            continue
        if check is not None:
            check(response)
        if n >= warmup:
            t.add(seconds, len(response.content))
    return t


def bench_requests(
    report: Report, base: str, devices: Sequence[Device], scale: float, concurrency: int
) -> None:
    rng = random.Random(3)
    districts = [d.name for d in DISTRICTS]
    by_district = defaultdict(list)
    for d in devices:
        by_district[d.district].append(d)
    with httpx.Client(base_url=base, timeout=120) as client:
        report.section("Latest state (in-process cache)")
        # One district, every page at the maximum page size (1000), all six districts.
        pages = Timings()
        walks = Timings()
        rounds = max(1, round(2 * scale))
        district_size = 0
        for _ in range(rounds):
            for name in districts:
                offset, walked, size = 0, 0.0, 0
                while True:
                    seconds, response = timed_get(
                        client, "/devices", {"district": name, "limit": 1000, "offset": offset}
                    )
                    body = response.json()
                    pages.add(seconds, len(response.content))
                    walked += seconds
                    size += len(response.content)
                    offset += len(body["items"])
                    if offset >= body["total"] or not body["items"]:
                        break
                district_size = body["total"]
                walks.add(walked, size)
        report.timings("GET /devices?district=D&limit=1000 (one page)", pages)
        report.timings(
            f"  whole district, all pages ({district_size:,} devices)",
            walks,
            f"{-(-district_size // 1000)} pages",
        )
        small = run_requests(
            client,
            "/devices",
            [
                {"district": rng.choice(districts), "limit": 100}
                for _ in range(int(200 * scale) + 1)
            ],
        )
        report.timings("GET /devices?district=D (default page, 100)", small)
        filtered = run_requests(
            client,
            "/devices",
            [
                {"district": rng.choice(districts), "profile": "water_pipe", "limit": 1000}
                for _ in range(int(50 * scale) + 1)
            ],
        )
        report.timings("GET /devices?profile=water_pipe&district=D&limit=1000", filtered)
        by_status = run_requests(
            client,
            "/devices",
            [
                {"district": rng.choice(districts), "status": "on_time", "limit": 1000}
                for _ in range(int(50 * scale) + 1)
            ],
        )
        report.timings(
            "GET /devices?district=D&status=on_time&limit=1000",
            by_status,
            "a filter: every device of the district judged",
        )
        single = Timings()
        for _ in range(int(500 * scale) + 1):
            device = rng.choice(devices)
            seconds, response = timed_get(client, f"/devices/{device.device_id}", {})
            single.add(seconds, len(response.content))
        report.timings("GET /devices/{id}", single)

        # Concurrency: the same district pages from several clients at once.
        per_client = int(30 * scale) + 2

        def worker(k: int) -> list[float]:
            local = random.Random(k)
            out = []
            with httpx.Client(base_url=base, timeout=120) as c:
                for _ in range(per_client):
                    name = local.choice(districts)
                    offset = local.randrange(len(by_district[name]) // 1000 + 1) * 1000
                    out.append(
                        timed_get(
                            c, "/devices", {"district": name, "limit": 1000, "offset": offset}
                        )[0]
                    )
            return out

        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            latencies = [s for part in pool.map(worker, range(concurrency)) for s in part]
        wall = time.perf_counter() - started
        report.timings(
            f"  same pages, {concurrency} concurrent clients",
            Timings(latencies, [0] * len(latencies)),
            f"{len(latencies) / wall:,.0f} requests/s",
        )

        report.section("GeoJSON (in-process cache)")
        lamps = sum(1 for d in devices if d.profile == "streetlight")

        def features(response: httpx.Response) -> None:
            body = orjson.loads(response.content)
            if len(body["features"]) != lamps:
                raise RuntimeError(f"{len(body['features'])} features, expected {lamps}")

        geo = run_requests(
            client,
            "/devices.geojson",
            [{"profile": "streetlight", "limit": 100_000}] * (max(3, int(6 * scale)) + 1),
            check=features,
        )
        report.timings(f"GET /devices.geojson?profile=streetlight ({lamps:,} features)", geo)
        geo_d = run_requests(
            client,
            "/devices.geojson",
            [
                {"profile": "streetlight", "district": rng.choice(districts), "limit": 100_000}
                for _ in range(int(10 * scale) + 1)
            ],
        )
        report.timings("GET /devices.geojson?profile=streetlight&district=D", geo_d)

        report.section("Aggregation across devices, last 24 h (InfluxDB at query time, then kept)")
        n_agg = max(3, int(5 * scale))
        for label, params in aggregate_cases(DISTRICTS[0].name):
            bench_aggregate(report, client, label, params, n_agg)

        report.section("One device's history, last 24 h (InfluxDB)")
        pipes = [d for d in devices if d.profile == "water_pipe"]
        meters = [d for d in devices if d.profile == "power_meter"]
        lights = [d for d in devices if d.profile == "streetlight"]
        n_hist = int(100 * scale) + 1
        for label, pool_, params in (
            ("water_pipe pressure mean per 1h", pipes, {"field": "pressure", "every": "1h"}),
            (
                "streetlight powerConsumption max per 15m",
                lights,
                {"field": "powerConsumption", "agg": "max", "every": "15m"},
            ),
            (
                "power_meter energy delta per hour",
                meters,
                {"field": "totalActiveEnergyImport", "agg": "delta", "every": "hour"},
            ),
        ):
            hist = Timings()
            for n in range(n_hist):
                device = rng.choice(pool_)
                seconds, response = timed_get(
                    client, f"/devices/{device.device_id}/history", params
                )
                if n:
                    hist.add(seconds, len(response.content))
            report.timings(label, hist)


def aggregate_cases(district: str) -> list[tuple[str, dict[str, Any]]]:
    pipe = {"profile": "water_pipe", "field": "pressure"}
    light = {"profile": "streetlight"}
    energy = {"profile": "power_meter", "field": "totalActiveEnergyImport", "agg": "delta"}
    return [
        ("water_pipe pressure mean per district per 1h", {**pipe, "every": "1h"}),
        (
            "water_pipe pressure min, one district, per 15m",
            {**pipe, "agg": "min", "every": "15m", "district": district},
        ),
        (
            "streetlight lamps on (powerState=on) per district per 1h",
            {**light, "field": "powerState", "agg": "count", "equals": "on", "every": "1h"},
        ),
        (
            "streetlight powerConsumption sum per district per 1h",
            {**light, "field": "powerConsumption", "agg": "sum", "every": "1h"},
        ),
        ("power_meter energy (counter delta) per district per day", {**energy, "every": "day"}),
        (
            "power_meter energy per day, one district",
            {**energy, "every": "day", "district": district},
        ),
        (
            "power_meter energy per district per hour (Asia/Shanghai)",
            {**energy, "every": "hour", "tz": "Asia/Shanghai"},
        ),
    ]


CELLS_HEADER = "CitySense-Cells-Computed"


def bench_aggregate(
    report: Report, client: httpx.Client, label: str, params: dict[str, Any], repeat: int
) -> None:
    """The first ask computes every (window, district) cell in InfluxDB; the same question asked
    again is answered from the cells the API kept (api.cells)."""
    try:
        seconds, response = timed_get(client, "/aggregates", params)
    except (Failed, httpx.TimeoutException) as exc:
        report.add(f"{label}: first ask", "FAILED", str(exc)[:160])
        return
    report.add(
        f"{label}: first ask",
        ms(seconds),
        f"cells computed {response.headers.get(CELLS_HEADER, '?')}",
    )
    computed = set()

    def kept(response: httpx.Response) -> None:
        computed.add(response.headers.get(CELLS_HEADER, "?"))

    t = run_requests(client, "/aggregates", [params] * repeat, warmup=0, check=kept)
    report.timings(f"{label}: asked again", t, f"cells computed {', '.join(sorted(computed))}")


def bench_aggregates_after_ingest(report: Report, base: str, district: str) -> None:
    """Asked again after live ingest wrote into the current windows: those cells are computed
    again (once the API's max staleness has passed), the rest stay kept."""
    report.section(
        "Aggregation across devices again, after live ingest touched the current windows"
    )
    with httpx.Client(base_url=base, timeout=120) as client:
        for label, params in aggregate_cases(district):
            try:
                seconds, response = timed_get(client, "/aggregates", params)
            except (Failed, httpx.TimeoutException) as exc:
                report.add(label, "FAILED", str(exc)[:160])
                continue
            report.add(label, ms(seconds), f"cells computed {response.headers.get(CELLS_HEADER)}")


# --- 5. SSE while ingesting ----------------------------------------------------------------------


def start_ingest(
    children: Children, servers: LocalServers, registry: Path, home: Path
) -> tuple[subprocess.Popen[Any], int, Path]:
    port = free_port()
    env = {
        **common_env(servers, registry),
        "CITYSENSE_MQTT_URL": servers.mosquitto.url("citysense-ingest"),
        "CITYSENSE_CLIENT_ID": "bench-ingest",
        "CITYSENSE_HTTP_PORT": str(port),
        "CITYSENSE_SPOOL_DIR": str(home / "spool"),
        "CITYSENSE_LOG_LEVEL": "WARNING",
    }
    log = home / "ingest.log"
    proc = children.start([sys.executable, "-m", "citysense.cli", "ingest"], env, log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ingest exited with {proc.returncode}:\n{tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://{HOST}:{port}/ready", timeout=1).status_code == 200:
                return proc, port, log
        time.sleep(0.1)
    raise RuntimeError(f"ingest not ready in 120 s:\n{tail(log)}")


def stored_readings(port: int) -> int:
    text = httpx.get(f"http://{HOST}:{port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("citysense_ingest_readings_stored_total "):
            return int(float(line.split()[1]))
    return 0


class FeedWatch:
    """When each reading's state-feed message (ingest -> API) arrived, seen by a subscriber of
    our own beside the API: splits delivery latency into ingest's part and the API's."""

    def __init__(self, url: str, root: str) -> None:
        self.seen: dict[tuple[str, int], int] = {}
        parsed = MqttUrl.parse(url)
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-feed-{os.getpid()}"
        )
        self._client.username_pw_set(parsed.username, parsed.password)
        self._client.on_message = self._message
        self._subscribed = threading.Event()
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.connect(parsed.host, parsed.port)
        self._client.subscribe(f"{root}/_ingested/+", qos=0)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("no SUBACK for the feed")

    def _message(self, _client: Any, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        now = time.time_ns()
        for reading in orjson.loads(message.payload).get("readings", ()):
            self.seen[(reading["device_id"], reading["time"])] = now

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class Probe(threading.Thread):
    """GET one device every `every` seconds: how requests fare while events flow."""

    def __init__(self, base: str, device_id: str, every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.base, self.path, self.every = base, f"/devices/{device_id}", every
        self.timings = Timings()
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=60) as client:
            while not self.stop.wait(self.every):
                try:
                    seconds, response = timed_get(client, self.path, {})
                    self.timings.add(seconds, len(response.content))
                except (Failed, httpx.HTTPError) as exc:
                    self.timings.errors.append(str(exc)[:160])


def drain(received: Callable[[], int], expected: int) -> None:
    """Until every client has every event, or nothing more arrives for 5 s."""
    last, still = -1, time.monotonic()
    while True:
        count = received()
        if count >= expected:
            return
        if count != last:
            last, still = count, time.monotonic()
        elif time.monotonic() - still > 5:
            return
        time.sleep(0.2)


def _percentiles(values: Sequence[float]) -> str:
    if not values:
        return "none"
    return f"p50 {ms(pct(values, 50))}  p99 {ms(pct(values, 99))}  max {ms(max(values))}"


def bench_sse(
    report: Report,
    children: Children,
    servers: LocalServers,
    registry: Path,
    home: Path,
    *,
    api: subprocess.Popen[Any],
    base: str,
    devices: Sequence[Device],
    clients: int,
    rate: float,
    seconds: float,
    publishing_devices: int,
    filtered: bool,
) -> None:
    ingest, ingest_port, _ = start_ingest(children, servers, registry, home)
    districts = [d.name for d in DISTRICTS]
    paths = [
        "/stream?kind=reading"
        + (f"&district={districts[n % len(districts)]}" if filtered and n % 2 else "")
        for n in range(clients)
    ]
    out = home / "sse.json"
    port = int(base.rsplit(":", 1)[1])
    sse_log = home / "sse_clients.log"
    sse = children.start(
        [sys.executable, "-m", "bench.sse_clients", HOST, str(port), "|".join(paths), str(out)],
        dict(os.environ),
        sse_log,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sse.stdout is not None and sse.stdin is not None
    if sse.stdout.readline().strip() != "ready":
        raise RuntimeError(f"SSE clients did not connect:\n{tail(sse_log)}")

    def received() -> int:
        assert sse.stdin is not None and sse.stdout is not None
        sse.stdin.write("count\n")
        sse.stdin.flush()
        return int(sse.stdout.readline())

    step = max(1, len(devices) // publishing_devices)
    chosen = list(devices)[::step][:publishing_devices]
    district_of = {d.device_id: d.district for d in devices}
    interval = max(1.0, len(chosen) / rate)
    profiles = load_profiles()
    sent: list[ExpectedReading] = []

    def recording() -> Iterator[SimMessage]:
        for message in generate(
            chosen,
            profiles,
            TopicLayout(ROOT),
            readings_per_device=0,
            array_ratio=0.0,
            fault_ratio=0.0,
            seed=17,
            time_mode=LIVE,
            interval_s=interval,
        ):
            sent.extend(message.readings)
            yield message

    feed = FeedWatch(servers.mosquitto.url("citysense-api"), ROOT)
    probe = Probe(base, chosen[0].device_id)
    before_stored = stored_readings(ingest_port)
    api_cpu = cpu_seconds(api.pid)
    ingest_cpu = cpu_seconds(ingest.pid)
    clients_cpu = cpu_seconds(sse.pid)
    own_cpu = time.process_time()
    idle_ticks = _idle_ticks()
    started = time.perf_counter()
    probe.start()
    try:
        published = publish(
            MqttUrl.parse(servers.mosquitto.url("citysense-simulator")),
            recording(),
            duration=seconds,
            pace=True,
        )
    finally:
        probe.stop.set()
    expected = sent[: published.valid_readings]
    keys = {(r.device_id, r.time_ns) for r in expected}
    expected_events = sum(
        len(want_for(keys, district_of, districts, n, filtered)) for n in range(clients)
    )
    deadline = time.monotonic() + 60
    while stored_readings(ingest_port) - before_stored < len(expected):
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    drain(received, expected_events)
    wall = time.perf_counter() - started
    api_cpu = cpu_seconds(api.pid) - api_cpu
    ingest_cpu = cpu_seconds(ingest.pid) - ingest_cpu
    clients_cpu = cpu_seconds(sse.pid) - clients_cpu
    own_cpu = time.process_time() - own_cpu
    idle = (_idle_ticks() - idle_ticks) / os.sysconf("SC_CLK_TCK") / (os.cpu_count() or 1)
    stored = stored_readings(ingest_port) - before_stored
    sse.stdin.write("stop\n")
    sse.stdin.flush()
    if sse.stdout.readline().strip() != "done":
        raise RuntimeError(f"SSE clients failed:\n{tail(sse_log)}")
    Children.stop(sse)
    Children.stop(ingest)
    feed.close()
    probe.join(5)
    results = orjson.loads(out.read_bytes())

    latencies: list[float] = []
    api_part: list[float] = []
    last_arrival: dict[tuple[str, int], int] = {}
    first_sent = min((r.time_ns for r in expected), default=0)
    last_event = 0
    complete = missing_total = duplicates = overflowed = failed = delivered = 0
    for n, result in enumerate(results):
        want = want_for(keys, district_of, districts, n, filtered)
        got = [(e[0], e[1]) for e in result["events"]]
        seen = set(got)
        duplicates += len(got) - len(seen)
        missing = want - seen
        missing_total += len(missing)
        complete += not missing
        overflowed += bool(result["overflow"])
        failed += bool(result["error"]) or bool(result["closed"])
        delivered += len(got)
        for device_id, time_ns, arrived in result["events"]:
            key = (device_id, time_ns)
            if key not in keys:
                continue
            latencies.append((arrived - time_ns) / S)
            if key in feed.seen:
                api_part.append((arrived - feed.seen[key]) / S)
            last_arrival[key] = max(last_arrival.get(key, 0), arrived)
            last_event = max(last_event, arrived)
    to_all = [(arrival - k[1]) / S for k, arrival in last_arrival.items()]
    ingest_part = [(feed.seen[k] - k[1]) / S for k in keys if k in feed.seen]
    kind = (
        "half unfiltered, half one district each" if filtered else "each unfiltered (kind=reading)"
    )
    report.section(
        f"Live push: {clients} SSE clients ({kind}) while ingest stores {rate:g} readings/s"
    )
    report.add(
        "published over MQTT (QoS 1), paced",
        f"{published.messages:,} readings in {published.seconds:.1f} s = {published.rate:,.0f}/s",
        f"{len(chosen):,} devices, each every {interval:g} s",
    )
    report.add("stored by one ingest worker", f"{stored:,} readings")
    span = (last_event - first_sent) / S if last_event else 0.0
    report.add(
        "events delivered (all clients)",
        f"{delivered:,} of {expected_events:,}",
        f"{delivered / span:,.0f} events/s from the first reading to the last event"
        if span
        else "",
    )
    report.add(
        "clients that got every event",
        f"{complete} of {clients}",
        f"{missing_total:,} events missing, {duplicates} duplicates, {overflowed} overflowed, "
        f"{failed} failed/closed",
    )
    report.add(
        "latency reading (= publish) -> event at a client",
        _percentiles(latencies),
        f"n={len(latencies):,}",
    )
    report.add(
        "  of which ingest: reading -> state feed message",
        _percentiles(ingest_part),
        f"n={len(ingest_part):,} readings",
    )
    report.add(
        "  of which the API: state feed message -> event at a client",
        _percentiles(api_part),
        f"n={len(api_part):,}",
    )
    report.add(
        "latency until the last client has it", _percentiles(to_all), f"n={len(to_all):,} readings"
    )
    report.timings("GET /devices/{id} every 0.1 s meanwhile", probe.timings)
    report.add(
        "CPU during the run (share of one core)",
        f"API {api_cpu / wall:.0%}, ingest {ingest_cpu / wall:.0%}",
        f"SSE clients {clients_cpu / wall:.0%}, publisher and probe {own_cpu / wall:.0%}; "
        f"machine idle {idle / wall:.0%} over {wall:.1f} s",
    )


def want_for(
    keys: set[tuple[str, int]],
    district_of: dict[str, str],
    districts: list[str],
    n: int,
    filtered: bool,
) -> set[tuple[str, int]]:
    district = districts[n % len(districts)] if filtered and n % 2 else None
    return {k for k in keys if district is None or district_of[k[0]] == district}


# --- main --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--hours", type=float, default=24.0, help="history to load")
    parser.add_argument(
        "--history-every", type=int, default=3600, help="seconds between loaded readings"
    )
    parser.add_argument("--loaders", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiplies the number of requests"
    )
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--sse-clients", type=int, default=100)
    parser.add_argument(
        "--sse-rate",
        type=float,
        nargs="+",
        default=[100.0, 1000.0],
        help="readings/s published (one SSE run per rate)",
    )
    parser.add_argument("--sse-seconds", type=float, default=30.0)
    parser.add_argument("--sse-devices", type=int, default=1000, help="devices publishing")
    parser.add_argument(
        "--sse-filtered", action="store_true", help="half the clients filter one district"
    )
    parser.add_argument("--quick", action="store_true", help="fewer requests and a shorter SSE run")
    parser.add_argument("--skip-sse", action="store_true")
    parser.add_argument(
        "--warm",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the API keeps the aggregates asked here warm (--no-warm: first asks compute)",
    )
    parser.add_argument("--skip-requests", action="store_true")
    parser.add_argument(
        "--api-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra CITYSENSE_* setting for the API process",
    )
    args = parser.parse_args()
    if args.quick:
        args.scale = min(args.scale, 0.3)
        args.sse_seconds = min(args.sse_seconds, 10.0)
    report = Report()
    children = Children()
    print(f"machine: {machine()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="citysense-api-bench-") as tmp:
        home = Path(tmp)
        servers = LocalServers.create(home / "servers", root=ROOT)
        servers.start()
        try:
            version = httpx.get(f"{servers.influxdb.url}/ping").headers.get(
                "X-Influxdb-Version", "?"
            )
            report.section(f"Setup: {machine()}; InfluxDB {version}")
            registry = home / "city.csv"
            with registry.open("w") as out:
                write_city(out, args.devices)
            devices = sorted(
                load_registry(registry, load_profiles()).devices.values(),
                key=lambda d: d.device_id,
            )
            mix: defaultdict[str, int] = defaultdict(int)
            for d in devices:
                mix[d.profile] += 1
            report.add(
                "registry",
                f"{len(devices):,} devices in {len(DISTRICTS)} districts",
                ", ".join(f"{n:,} {p}" for p, n in sorted(mix.items())),
            )
            print("loading history ...", flush=True)
            points, size, seconds = load_history(
                servers, devices, args.hours, args.history_every, args.loaders
            )
            steps = int(args.hours * 3600 // args.history_every)
            report.add(
                "history loaded (line protocol straight to InfluxDB)",
                f"{points:,} points in {seconds:.1f} s = {points / seconds:,.0f} points/s",
                f"every device: {steps + 1} readings, one each {args.history_every} s over "
                f"{args.hours:g} h, the newest within {LATEST_SPREAD_S} s of the load; "
                f"{size / 1e6:,.0f} MB, {args.loaders} writer processes",
            )
            stored = count_stored(servers)
            report.add(
                "stored (count query)",
                f"{sum(stored.values()):,} points",
                ", ".join(f"{k} {v:,}" for k, v in stored.items()),
            )
            print("starting the API ...", flush=True)
            extra = dict(item.split("=", 1) for item in args.api_env)
            if args.warm:
                extra["CITYSENSE_API_AGGREGATE_WARM"] = "; ".join(
                    urlencode(params) for _, params in aggregate_cases(DISTRICTS[0].name)
                )
            api, base, listening, loaded, api_log = start_api(
                children, servers, registry, home, extra
            )
            report.section("API start (citysense api, one uvicorn process)")
            report.add(
                "start -> serving, latest state of every device loaded from InfluxDB",
                ms(loaded),
                "uvicorn listens once the app's start-up (contract, registry, state) is done"
                if abs(loaded - listening) < 0.2
                else f"listening after {ms(listening)}",
            )
            report.add("API resident memory after loading", f"{rss_mb(api.pid):,.0f} MB")
            if args.warm:
                print("waiting for the API to warm its aggregates ...", flush=True)
                report.add(
                    "aggregates warmed in the background after start",
                    wait_for_line(api_log, "aggregates warmed", 1800).split("aggregates warmed: ")[
                        -1
                    ],
                )
            with httpx.Client(base_url=base, timeout=60) as c:
                on_time = c.get("/devices", params={"status": "on_time", "limit": 1}).json()
            report.add("devices reporting on time at start", f"{on_time['total']:,}")
            if not args.skip_requests:
                print("timing requests ...", flush=True)
                bench_requests(report, base, devices, args.scale, args.concurrency)
            if not args.skip_sse:
                for rate in args.sse_rate:
                    print(f"SSE while ingesting {rate:g} readings/s ...", flush=True)
                    bench_sse(
                        report,
                        children,
                        servers,
                        registry,
                        home,
                        api=api,
                        base=base,
                        devices=devices,
                        clients=args.sse_clients,
                        rate=rate,
                        seconds=args.sse_seconds,
                        publishing_devices=min(max(args.sse_devices, int(rate)), len(devices)),
                        filtered=args.sse_filtered,
                    )
                if not args.skip_requests:
                    # Past the staleness bound; with warming, also past one more warming round.
                    time.sleep(STALENESS_S * (2 if args.warm else 1))
                    bench_aggregates_after_ingest(report, base, DISTRICTS[0].name)
            report.add("API resident memory at the end", f"{rss_mb(api.pid):,.0f} MB")
            if api.poll() is not None:
                raise RuntimeError(f"the API died:\n{tail(api_log)}")
            warnings = [ln for ln in tail(api_log, 20000).splitlines() if "ERROR" in ln]
            if warnings:
                print("API log errors:\n" + "\n".join(warnings[-10:]))
        finally:
            children.stop_all()
            servers.stop()
    report.print()


if __name__ == "__main__":
    main()
