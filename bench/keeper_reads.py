"""What the rollup keeper's reads cost InfluxDB: a (profile, district) unit's readings over a day
read one field per query (the keeper's way) against every field in one query, on the same data
in the same run, each side's InfluxDB CPU and wall time measured, alternating sides per unit so
that neither gets a warmer cache.

    .venv/bin/python -m bench.keeper_reads --devices 30000

History as bench.api_bench loads it (one reading per device every `--history-every` seconds over
`--hours`), written straight into InfluxDB.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from api.core import query as q
from bench.api.constants import DATABASE, ROOT
from bench.api.figures import Report
from bench.api.history import load_history, write_registry
from citysense.children import cpu_seconds
from citysense.servers import LocalServers
from common.influx import AsyncInfluxClient, InfluxConfig
from device_profiles import load_profiles
from simulators.city import DISTRICTS

VALUES = 100_000  # the keeper's api_rollups_read_rows default: values per chunk


async def _drain(influx: AsyncInfluxClient, query: q.Query, columns: int) -> float:
    """Seconds until the answer's first chunk (the keeper's reads wait at most the InfluxDB
    timeout for it, 10 s by default)."""
    began, first = time.perf_counter(), None
    async for _chunk in q.fetch_chunks(influx, query, max(VALUES // columns, 1), 600.0):
        first = first or time.perf_counter() - began
    return first or time.perf_counter() - began


async def _measure(url: str, pid: int, start: int, end: int, report: Report) -> None:
    profiles = load_profiles()
    influx = AsyncInfluxClient(InfluxConfig(url=url, database=DATABASE, timeout=600.0))
    totals = {"per field": [0.0, 0.0, 0.0], "all fields": [0.0, 0.0, 0.0]}
    try:
        for k, (profile, district) in enumerate(
            (p, d.name) for p in profiles.values() for d in DISTRICTS
        ):
            per_field = [q.field_readings(profile, f, district, start, end) for f in profile.fields]
            together = [q.unit_readings(profile, list(profile.fields), district, start, end)]
            sides = [("per field", per_field, 1), ("all fields", together, len(profile.fields))]
            for name, queries, columns in sides if k % 2 == 0 else reversed(sides):
                cpu, wall = cpu_seconds(pid), time.perf_counter()
                for query in queries:
                    first = await _drain(influx, query, columns)
                    totals[name][2] = max(totals[name][2], first)
                totals[name][0] += cpu_seconds(pid) - cpu
                totals[name][1] += time.perf_counter() - wall
    finally:
        await influx.aclose()
    base = totals["per field"]
    for name, (cpu, wall, first) in totals.items():
        report.add(
            f"every unit's day, {name}",
            f"InfluxDB CPU {cpu:.1f} s, wall {wall:.1f} s",
            f"{cpu / base[0]:.2f}x the per-field CPU, {wall / base[1]:.2f}x its wall; "
            f"slowest first chunk {first:.1f} s",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=30_000)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--history-every", type=int, default=3600)
    args = parser.parse_args()
    report = Report()
    with tempfile.TemporaryDirectory(prefix="citysense-keeper-reads-") as tmp:
        home = Path(tmp)
        servers = LocalServers.create(home / "servers", root=ROOT)
        servers.start()
        try:
            _, devices = write_registry(report, home, args.devices)
            points, _, seconds = load_history(servers, devices, args.hours, args.history_every, 2)
            report.add("history", f"{points:,} points in {seconds:.1f} s", "")
            process = servers.influxdb.process
            assert process is not None
            end = time.time_ns() + 1
            start = end - int(args.hours * 3600e9)
            asyncio.run(_measure(servers.influxdb.url, process.pid, start, end, report))
        finally:
            servers.stop()
    report.print()


if __name__ == "__main__":
    main()
