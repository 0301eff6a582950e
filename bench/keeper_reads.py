"""What the rollup keeper's reads cost InfluxDB, and what they cost everyone else meanwhile: a
(profile, district) unit's readings over a day read one field per query, a few fields per query
(`--group`), and every field in one query, on the same data in the same run; each side's InfluxDB
CPU and wall time, its slowest first chunk, and the latency of the change-marks read every
aggregate begins with, asked every PROBE_S while that side reads, with `--live` readings/s
written meanwhile. The sides take turns unit by unit, so that none gets a warmer cache.

    .venv/bin/python -m bench.keeper_reads --devices 100000

History as bench.api_bench loads it (one reading per device every `--history-every` seconds over
`--hours`), written straight into InfluxDB.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

from api.core import query as q
from api.core.windows import Window
from bench.api.constants import DATABASE, ROOT
from bench.api.figures import Report
from bench.api.history import load_history, write_registry
from citysense.children import cpu_seconds
from citysense.servers import LocalServers
from common.influx import AsyncInfluxClient, InfluxConfig
from device_profiles import Device, Profile, load_profiles
from simulators.city import DISTRICTS
from wire.lineproto import tag

VALUES = 100_000  # the keeper's api_rollups_read_rows default: values per chunk
PROBE_S = 0.25


async def _drain(influx: AsyncInfluxClient, query: q.Query, columns: int) -> float:
    """Seconds until the answer's first chunk (the keeper's reads wait at most the InfluxDB
    timeout for it, 10 s by default)."""
    began, first = time.perf_counter(), None
    async for _chunk in q.fetch_chunks(influx, query, max(VALUES // columns, 1), 600.0):
        first = first or time.perf_counter() - began
    return first or time.perf_counter() - began


Side = tuple[str, int]  # a name, and how many fields one read asks (0: all of them)


def _reads(profile: Profile, district: str, fields_per_read: int, span: Window) -> list[q.Query]:
    names = list(profile.fields)
    step = fields_per_read or len(names)
    return [
        q.unit_readings(profile, names[k : k + step], district, *span)
        for k in range(0, len(names), step)
    ]


class _Probe:
    """What the API asks meanwhile: a change-marks read (every aggregate's first query) every
    PROBE_S, its latency put down to the side being read when it was sent."""

    def __init__(self, influx: AsyncInfluxClient, profile: Profile, span: Window) -> None:
        self.side = ""
        self.samples: dict[str, list[float]] = {}
        self._influx, self._query = (
            influx,
            q.changes(profile, since_ns=span[0], start_ns=span[0], end_ns=span[1]),
        )

    async def run(self) -> None:
        while True:
            side, began = self.side, time.perf_counter()
            await q.fetch_all(self._influx, self._query)
            self.samples.setdefault(side, []).append(time.perf_counter() - began)
            await asyncio.sleep(PROBE_S)


async def _live(influx: AsyncInfluxClient, devices: list[Device], rate: float) -> None:
    """`rate` streetlight readings a second written meanwhile, as ingest would, 10 writes a
    second (InfluxDB's cache takes them while the reads run)."""
    lights = [d for d in devices if d.profile == "streetlight"]
    rng = random.Random(1)
    per_write = max(int(rate / 10), 1)
    while True:
        now = time.time_ns()
        lines = [
            f"streetlight,device_id={tag(d.device_id)},district={tag(d.district)} "
            f'powerConsumption={rng.uniform(10, 90):.1f},powerState="on" {now - n}'
            for n, d in enumerate(rng.sample(lights, per_write))
        ]
        await influx.write("\n".join(lines).encode())
        await asyncio.sleep(0.1)


async def _measure(
    url: str, pid: int, span: Window, devices: list[Device], args: argparse.Namespace
) -> Report:
    profiles = load_profiles()
    influx = AsyncInfluxClient(InfluxConfig(url=url, database=DATABASE, timeout=600.0))
    grouped = f"{args.group} fields a read"
    sides: list[Side] = [("per field", 1), (grouped, args.group), ("all fields", 0)]
    totals = {name: [0.0, 0.0, 0.0] for name, _ in sides}
    probe = _Probe(influx, profiles["streetlight"], span)
    background = [asyncio.create_task(probe.run())]
    if args.live:
        background.append(asyncio.create_task(_live(influx, devices, args.live)))
    try:
        units = [(p, d.name) for p in profiles.values() for d in DISTRICTS]
        for k, (profile, district) in enumerate(units):
            for name, fields_per_read in sides[k % len(sides) :] + sides[: k % len(sides)]:
                probe.side = name
                columns = fields_per_read or len(profile.fields)
                cpu, wall = cpu_seconds(pid), time.perf_counter()
                for query in _reads(profile, district, fields_per_read, span):
                    first = await _drain(influx, query, columns)
                    totals[name][2] = max(totals[name][2], first)
                totals[name][0] += cpu_seconds(pid) - cpu
                totals[name][1] += time.perf_counter() - wall
            probe.side = ""
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await influx.aclose()
    report = Report()
    base = totals["per field"]
    for name, (cpu, wall, first) in totals.items():
        waits = sorted(probe.samples.get(name, [0.0]))
        report.add(
            f"every unit's day, {name}",
            f"InfluxDB CPU {cpu:.1f} s, wall {wall:.1f} s",
            f"{cpu / base[0]:.2f}x the per-field CPU, {wall / base[1]:.2f}x its wall; "
            f"slowest first chunk {first:.1f} s; a marks read meanwhile: "
            f"p50 {1000 * waits[len(waits) // 2]:.0f} ms, max {1000 * waits[-1]:.0f} ms "
            f"(n={len(waits)})",
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=30_000)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--history-every", type=int, default=3600)
    parser.add_argument("--group", type=int, default=4, help="fields a read, the middle side")
    parser.add_argument("--live", type=float, default=1000.0, help="readings/s written meanwhile")
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
            span = (end - int(args.hours * 3600e9), end)
            url = servers.influxdb.url
            measured = asyncio.run(_measure(url, process.pid, span, devices, args))
        finally:
            servers.stop()
    report.print()
    measured.print()


if __name__ == "__main__":
    main()
