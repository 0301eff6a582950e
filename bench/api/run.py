"""The API benchmark, step by step, on servers of its own in a temporary folder; the command
line is bench/api_bench.py's."""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson

from bench.api.aggregates import (
    bench_aggregates_after_ingest,
    bench_aggregates_after_restart,
    warm_setting,
)
from bench.api.constants import ROOT, STALENESS_S
from bench.api.delivery import LiveRun
from bench.api.devices import bench_requests
from bench.api.figures import Report, machine, ms
from bench.api.history import load_and_count, write_registry
from bench.api.processes import (
    ApiProcess,
    KeeperProcess,
    Stack,
    start_api,
    start_ingest,
    start_keeper,
)
from bench.api.sse import bench_sse, recording
from citysense.children import Children
from citysense.servers import LocalServers
from common.mqtturl import MqttUrl
from device_profiles import Device, load_profiles
from simulators.city import DISTRICTS
from simulators.fleet import ExpectedReading
from simulators.publish import PublishReport, publish


def run(args: argparse.Namespace) -> None:
    """Everything it starts is stopped at the end, pass or fail; then the report is printed."""
    report = Report()
    children = Children()
    print(f"machine: {machine()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="citysense-api-bench-") as tmp:
        home = Path(tmp)
        servers = LocalServers.create(home / "servers", root=ROOT)
        servers.start()
        try:
            registry, devices = setup(report, servers, home, args)
            stack = Stack(report, servers, children, home, registry)
            api = start_and_describe_api(stack, args)
            if not args.skip_requests:
                print("timing requests ...", flush=True)
                bench_requests(report, api.base, devices, args.scale, args.concurrency)
                if args.restart:
                    api = restart_api(stack, api, args)
                if args.boundary:
                    api = ask_after_boundary(stack, api, args, devices)
            if not args.skip_sse:
                live(stack, api, devices, args)
            check_api(report, api)
            for line in keeper_log(stack, "computed"):  # when its rounds ran, and how long
                report.add("the keeper's log", line)
        finally:
            children.stop_all()
            servers.stop()
    report.print()


def setup(
    report: Report, servers: LocalServers, home: Path, args: argparse.Namespace
) -> tuple[Path, list[Device]]:
    """Steps 1 and 2: the registry, and its history loaded into InfluxDB."""
    version = httpx.get(f"{servers.influxdb.url}/ping").headers.get("X-Influxdb-Version", "?")
    report.section(f"Setup: {machine()}; InfluxDB {version}")
    registry, devices = write_registry(report, home, args.devices)
    load_and_count(
        report,
        servers,
        devices,
        hours=args.hours,
        every_s=args.history_every,
        loaders=args.loaders,
    )
    return registry, devices


def start_and_describe_api(stack: Stack, args: argparse.Namespace) -> ApiProcess:
    """Step 3: the API's start, its memory, its warm-up (with --warm), devices on time; with
    --rollups, the keeper started with it, as a deployment starts both, and its backfill."""
    report = stack.report
    keeper = None
    if args.rollups:
        print("starting the rollup keeper ...", flush=True)
        keeper = start_keeper(stack, dict(item.split("=", 1) for item in args.api_env))
    print("starting the API ...", flush=True)
    api = start_api(stack, api_env(args))
    report.section("API start (citysense api, one uvicorn process)")
    report.add(
        "start -> serving, latest state of every device loaded from InfluxDB",
        ms(api.loaded),
        "uvicorn listens once the app's start-up (contract, registry, state) is done"
        if abs(api.loaded - api.listening) < 0.2
        else f"listening after {ms(api.listening)}",
    )
    report.add("API resident memory after loading", f"{api.child.rss_mb():,.0f} MB")
    if keeper is not None:
        stack.keeper = keeper
        wait_for_rollups(report, keeper, "rollups backfilled (every window of the loaded history)")
    if args.warm:
        print("waiting for the API to warm its aggregates ...", flush=True)
        warmed = api.child.wait_for_line("aggregates warmed", 1800)
        report.add(
            "aggregates warmed in the background after start",
            warmed.split("aggregates warmed: ")[-1],
        )
    with httpx.Client(base_url=api.base, timeout=60) as c:
        on_time = c.get("/devices", params={"status": "on_time", "limit": 1}).json()
    report.add("devices reporting on time at start", f"{on_time['total']:,}")
    return api


def api_env(args: argparse.Namespace) -> dict[str, str]:
    extra = dict(item.split("=", 1) for item in args.api_env)
    if args.warm:
        extra["CITYSENSE_API_AGGREGATE_WARM"] = warm_setting(DISTRICTS[0].name)
    return extra


def wait_for_rollups(report: Report, keeper: KeeperProcess, label: str) -> None:
    """Until the keeper has computed every window of the loaded history (its /metrics say so):
    its backfill as the keeper timed it, its memory, its last round's duration."""
    print("waiting for the rollup keeper's backfill ...", flush=True)
    keeper.child.wait_until(lambda: keeper.metric("ready") == 1.0, 3600, "rollups ready", 0.5)
    report.add(
        label,
        ms(keeper.metric("backfill_seconds")),
        f"the keeper's first round (its own process): "
        f"{keeper.metric('windows_computed_total'):,.0f} (profile, district, grain) windows; "
        f"keeper resident memory {keeper.child.rss_mb():,.0f} MB, "
        f"peak {keeper.child.peak_rss_mb():,.0f} MB",
    )


def describe_keeper(report: Report, keeper: KeeperProcess) -> None:
    """What the keeper's rounds cost once the backfill is done (it runs on beside the API)."""
    report.add(
        "rollup keeper: its last round, rounds so far",
        ms(keeper.metric("last_round_seconds")),
        f"{keeper.metric('rounds_total'):,.0f} rounds, "
        f"{keeper.metric('windows_computed_total'):,.0f} windows written, "
        f"resident {keeper.child.rss_mb():,.0f} MB (peak {keeper.child.peak_rss_mb():,.0f} MB)",
    )


def restart_api(stack: Stack, api: ApiProcess, args: argparse.Namespace) -> ApiProcess:
    """Stop the API and start it again (same settings), then ask every aggregate question of
    step 4 again: the first ask of each on an API that kept nothing in memory. Twice: asked at
    once, while the new process's own start-up work runs (foresight's first round comes
    CITYSENSE_API_FORESIGHT_FIRST_AFTER later), and, after another restart, once that work,
    foresight's round included, is done. The rollup keeper, a process of its own, runs on
    through both restarts, as in a deployment."""
    report = stack.report
    for settled in (False, True):
        print("restarting the API ...", flush=True)
        log = api.child.log
        before = _lines(log, "foresight round")
        said = len(start_said(log))
        api.child.stop()
        api = start_api(stack, api_env(args))
        title = "API restarted, asked at once (its start-up work still running)"
        if settled:
            title = "API restarted again, asked once its start-up work was done"
        report.section(title)
        report.add("start -> serving, after the restart", ms(api.loaded))
        for line in start_said(log)[said:]:  # what it started from, and how long each part took
            report.add("  the API logged", line)
        if settled:
            started = time.perf_counter()

            def foresight_ran(log: Path | None = log, before: int = before) -> bool:
                return _lines(log, "foresight round") > before

            api.child.wait_until(foresight_ran, 1800, "foresight's first round")
            report.add("waited for foresight's first round", ms(time.perf_counter() - started))
        report.add("aggregates asked from", time.strftime("%H:%M:%S UTC", time.gmtime()))
        bench_aggregates_after_restart(report, api.base, DISTRICTS[0].name, 5)
        if stack.keeper is not None:
            describe_keeper(report, stack.keeper)
    return api


def ask_after_boundary(
    stack: Stack, api: ApiProcess, args: argparse.Namespace, devices: list[Device]
) -> ApiProcess:
    """The API restarted so that it serves just before a quarter-hour begins, then every
    aggregate question's first ask `--boundary` seconds after it began: each answer's current
    window began since the keeper's last round; the keeper's round aligned to the boundary
    (api.compute.keeper.pause) must have computed it by then, or it is computed from the
    readings. With --boundary-live, live readings are stored meanwhile (LiveCity)."""
    report = stack.report
    quarter = 900.0
    lead = 45.0  # the restart (about 10 s at 100,000 devices) is over before the boundary
    live_lead = 150.0  # the live readings begin this long before it: the quarter fills
    first = lead + (live_lead if args.boundary_live else 0.0)
    boundary = (time.time() // quarter + 1) * quarter
    if boundary - time.time() < first:
        boundary += quarter
    print(f"waiting {boundary - time.time() - first:.0f} s for a quarter-hour ...", flush=True)
    time.sleep(max(0.0, boundary - time.time() - first))
    city = LiveCity.start(stack, devices, args.boundary_live) if args.boundary_live else None
    time.sleep(max(0.0, boundary - time.time() - lead))
    api.child.stop()
    api = start_api(stack, api_env(args))
    time.sleep(max(0.0, boundary + args.boundary - time.time()))
    live_too = f", {args.boundary_live:g} live readings/s stored" if city else ""
    report.section(
        f"API restarted before a quarter-hour began, asked {args.boundary:g} s after it "
        f"began{live_too}"
    )
    report.add("start -> serving, after the restart", ms(api.loaded))
    report.add("aggregates asked from", time.strftime("%H:%M:%S UTC", time.gmtime()))
    bench_aggregates_after_restart(report, api.base, DISTRICTS[0].name, 5)
    report.add("aggregates asked until", time.strftime("%H:%M:%S UTC", time.gmtime()))
    if city is not None:
        city.stop(report)
    if stack.keeper is not None:
        found = keeper_log(stack, "begin now")
        report.add("the keeper on the windows that begin", found[-1] if found else "-")
        describe_keeper(report, stack.keeper)
    return api


class LiveCity:
    """An ingest worker storing the live readings of 1,000 devices spread over the city,
    published at `rate` readings/s in a thread of this process until `stop`."""

    def __init__(self, stack: Stack, devices: list[Device], rate: float) -> None:
        chosen = devices[:: max(1, len(devices) // 1000)][:1000]
        self.ingest = start_ingest(stack)
        self.before = self.ingest.stored_readings()
        self.sent: list[ExpectedReading] = []
        self.halt = threading.Event()
        self.published: list[PublishReport] = []
        messages = recording(chosen, load_profiles(), len(chosen) / rate, self.sent)
        url = MqttUrl.parse(stack.servers.mosquitto.url("citysense-simulator"))

        def run() -> None:
            self.published.append(publish(url, messages, pace=True, stop=self.halt))

        self.thread = threading.Thread(target=run, name="bench-live-city", daemon=True)

    @classmethod
    def start(cls, stack: Stack, devices: list[Device], rate: float) -> LiveCity:
        print(f"publishing {rate:g} live readings/s ...", flush=True)
        city = cls(stack, devices, rate)
        city.thread.start()
        return city

    def stop(self, report: Report) -> None:
        """Stop publishing, wait until ingest stored every reading, and say how many."""
        self.halt.set()
        self.thread.join(120)
        published = self.published[0] if self.published else None
        valid = published.valid_readings if published is not None else 0
        self.ingest.wait_stored(self.before + valid, 120)
        stored = self.ingest.stored_readings() - self.before
        self.ingest.child.stop()
        report.add("live readings published / stored", f"{valid:,} / {stored:,}")


def keeper_log(stack: Stack, text: str) -> list[str]:
    """The keeper's log lines holding `text`, each as `HH:MM:SS UTC: message`."""
    return [
        f"{record['ts'][11:19]} UTC: {record['msg']}"
        for record in _records(stack.home / "rollups.log")
        if text in record.get("msg", "")
    ]


def _records(log: Path | None) -> list[dict[str, str]]:
    """A running process's JSON log records; its last line may be half written: left out."""
    lines = log.read_bytes().splitlines() if log is not None and log.exists() else []
    records = []
    for line in lines:
        if line.startswith(b"{"):
            with contextlib.suppress(orjson.JSONDecodeError):
                records.append(orjson.loads(line))
    return records


def start_said(log: Path | None) -> list[str]:
    """The API's log lines, across its restarts, on what it loaded its latest state from."""
    return [
        f"{record['ts'][11:19]} UTC: {record['msg']}"
        for record in _records(log)
        if "latest state" in record.get("msg", "") or "latest rows" in record.get("msg", "")
    ]


def _lines(log: Path | None, text: str) -> int:
    """Lines of the log holding `text` (the log is appended to across restarts)."""
    if log is None or not log.exists():
        return 0
    return sum(text in line for line in log.read_text(errors="replace").splitlines())


def live(stack: Stack, api: ApiProcess, devices: list[Device], args: argparse.Namespace) -> None:
    """Step 5, once per --sse-rate; then the aggregates again, after live ingest."""
    for rate in args.sse_rate:
        print(f"SSE while ingesting {rate:g} readings/s ...", flush=True)
        run = LiveRun(
            clients=args.sse_clients,
            rate=rate,
            seconds=args.sse_seconds,
            publishing_devices=min(max(args.sse_devices, int(rate)), len(devices)),
            filtered=args.sse_filtered,
        )
        bench_sse(stack, api, devices, run)
    if not args.skip_requests:
        # Past the staleness bound; with warming, also past one more warming round.
        time.sleep(STALENESS_S * (2 if args.warm else 1))
        bench_aggregates_after_ingest(stack.report, api.base, DISTRICTS[0].name)


def check_api(report: Report, api: ApiProcess) -> None:
    """Its memory at the end; it must still run; the errors it logged, if any."""
    report.add("API resident memory at the end", f"{api.child.rss_mb():,.0f} MB")
    if not api.child.running:
        raise RuntimeError(f"the API died:\n{api.child.tail()}")
    warnings = [ln for ln in api.child.tail(20000).splitlines() if "ERROR" in ln]
    if warnings:
        print("API log errors:\n" + "\n".join(warnings[-10:]))
