"""What InfluxDB spends on the per-device hourly roll-ups into `long_term` a day, run each hour
(common.schema.HOURLY: the two hours before) against once a day (common.schema.DAILY: the two
days before): a benchmark, not a test.

    .venv/bin/python -m bench.rollups                              # 100,000 devices
    .venv/bin/python -m bench.rollups --devices 20000 --every 300  # fewer, denser devices

Starts its own Mosquitto and InfluxDB (temporary folder, free ports), writes a registry of
`--devices` devices (simulators.city) and `--hours` of their readings, one every `--every`
seconds, straight into InfluxDB, set up as a deployment has it but with InfluxDB's continuous
queries service off (so that it runs none by itself meanwhile: a query created runs at once),
and runs their own statements by hand, piece after piece as InfluxDB runs them: an hourly pass,
a daily pass of each `--daily-spans`, and the hourly pass again (the first pass of a kind reads
from disk what the next finds cached; the baseline is the cheaper hourly pass). Each is timed,
with InfluxDB's CPU meanwhile (/proc), once InfluxDB is quiet, and the rows it wrote (a device's
hour each) counted. Reports the CPU a day of each schedule costs (24 hourly passes, one daily)
and their ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.api.constants import DATABASE
from bench.api.figures import Report, machine
from bench.api.history import load_history, write_registry
from bench.api.memory import influx_quiet
from citysense.children import cpu_seconds
from citysense.servers import LocalServers
from common.influx import InfluxClient, InfluxConfig, quote_ident
from common.schema import DAILY, HOURLY, Resample, rollup_pieces, rollup_select, seconds
from device_profiles import load_profiles
from wire.retention import LONG_TERM

HOUR_NS = 3600 * 10**9


@dataclass(frozen=True, slots=True)
class Pass:
    resample: Resample
    wall: float  # seconds, every piece of every profile one after another
    influx_cpu: float  # InfluxDB's CPU seconds meanwhile
    queries: int
    rows: int  # rows in `long_term` over the pass's hours after it: a device's hour each

    @property
    def per_day(self) -> float:
        """InfluxDB's CPU seconds a day at this schedule: one pass each `every`."""
        return self.influx_cpu * 86400 / _seconds(self.resample.every)


def _seconds(duration: str) -> int:
    found = seconds(duration)
    if found is None:
        raise ValueError(f"{duration!r}: not a schedule")
    return found


def run_pass(servers: LocalServers, resample: Resample, end_ns: int) -> Pass:
    """One pass of `resample` ending at `end_ns` (an hour's start), as InfluxDB runs it."""
    influx = servers.influxdb.process
    if influx is None:
        raise RuntimeError("InfluxDB is not running")
    start_ns = end_ns - _seconds(resample.span) * 10**9
    config = InfluxConfig(url=servers.influxdb.url, database=DATABASE, timeout=3600)
    queries = 0
    cpu, clock = cpu_seconds(influx.pid), time.perf_counter()
    with InfluxClient(config) as client:
        for profile in sorted(p.measurement for p in load_profiles().values()):
            for _, ids in rollup_pieces():
                where = f"{ids} AND time >= {start_ns:d} AND time < {end_ns:d}"
                client.query(f"{rollup_select(DATABASE, profile, where)} GROUP BY time(1h), *")
                queries += 1
    wall, used = time.perf_counter() - clock, cpu_seconds(influx.pid) - cpu
    rows = sum(rolled_hours(servers, start_ns, end_ns).values())
    return Pass(resample, wall, used, queries, rows)


def rolled_hours(servers: LocalServers, start_ns: int, end_ns: int) -> dict[str, int]:
    """Rows in `long_term` per profile over [start_ns, end_ns)."""
    config = InfluxConfig(url=servers.influxdb.url, database=DATABASE, timeout=600)
    counted: dict[str, int] = {}
    with InfluxClient(config) as client:
        for profile in sorted(p.measurement for p in load_profiles().values()):
            source = f"{quote_ident(LONG_TERM)}.{quote_ident(profile)}"
            series = client.query(
                f"SELECT count(*) FROM {source} WHERE time >= {start_ns:d} AND time < {end_ns:d}"
            )[0]
            counted[profile] = max((int(v) for v in series[0].values[0][1:] if v), default=0)
    return counted


def measure(report: Report, servers: LocalServers, home: Path, args: argparse.Namespace) -> None:
    report.section(f"Setup: {machine()}")
    _, devices = write_registry(report, home, args.devices)
    print(f"writing {args.hours} h of readings ...", flush=True)
    points, _, took = load_history(servers, devices, args.hours, args.every, args.loaders)
    report.add("readings written", f"{points:,} points in {took:.1f} s")
    # The last whole hour: the end of the pass InfluxDB would run at its start.
    end_ns = time.time_ns() // HOUR_NS * HOUR_NS
    report.section("Passes, InfluxDB quiet before each")
    passes = []
    dailies = [Resample(DAILY.every, span) for span in args.daily_spans]
    for resample in (HOURLY, *dailies, HOURLY):
        waited, quiet = influx_quiet(servers)
        done = run_pass(servers, resample, end_ns)
        passes.append(done)
        report.add(
            f"{done.resample.clause}: one pass ({done.queries} queries)",
            f"{done.wall:,.1f} s, InfluxDB CPU {done.influx_cpu:,.1f} s, "
            f"{done.rows:,} rows = {done.influx_cpu / max(done.rows, 1) * 1e6:,.0f} µs a row",
            f"waited {waited:.0f} s for quiet{'' if quiet else ' (not quiet)'}",
        )
    hourly = min((p for p in passes if p.resample == HOURLY), key=lambda p: p.influx_cpu)
    report.section("A day of roll-ups: InfluxDB CPU")
    report.add(
        f"{HOURLY.clause}: 24 passes (baseline: its cheaper pass)", f"{hourly.per_day:,.0f} s"
    )
    for daily in (p for p in passes if p.resample != HOURLY):
        report.add(
            f"{daily.resample.clause}: 1 pass",
            f"{daily.per_day:,.0f} s",
            f"ratio, hourly to daily: {hourly.per_day / daily.per_day:,.2f}x",
        )


def run(args: argparse.Namespace) -> None:
    report = Report()
    print(f"machine: {machine()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="citysense-rollups-") as tmp:
        home = Path(tmp)
        servers = LocalServers.create(home / "servers", root="bench")
        servers.influxdb.continuous_queries = False
        servers.start()
        try:
            measure(report, servers, home, args)
        finally:
            servers.stop()
    report.print()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--hours", type=float, default=49.0)
    parser.add_argument("--every", type=int, default=3600, help="seconds between readings")
    parser.add_argument("--loaders", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--daily-spans",
        nargs="+",
        default=[DAILY.span],
        help="spans of the daily passes measured (InfluxQL durations)",
    )
    run(parser.parse_args())


if __name__ == "__main__":
    main()
