"""What InfluxDB alone takes to answer the API's full load from the readings (issue 15).

    .venv/bin/python -m bench.full_load_floor --devices 100000 --rounds 3

The start from the readings (the API's fallback when the latest rows are not whole) was measured
by bench.api_memory over 5 s at 100,000 devices. This asks how much of that no API code can
save: the same readings as there (one per device, written straight into InfluxDB), then, in
alternating rounds, the full load's queries sent as the API sends them (api.core.query's
`latest_readings`, one per profile and stored district, `api_query_concurrency` at a time,
streamed in the API's chunks) by a client that parses the answers and keeps nothing — no
imports, registry or merge to pay for. Each round reports the wall time, InfluxDB's CPU and the
client's. The same queries asking one field of each profile (its first required one) instead of
every field are measured alongside: what any query of the newest reading of every series costs
InfluxDB at the least (one iterator a series), the floor of this way of loading.

The ratio reported is the wall time over the 5 s the issue allows a start, in the same round.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from api.core import query as q
from api.core.settings import ApiSettings
from api.live.service import LOAD_SLICE
from bench.api.constants import DATABASE
from bench.api.figures import Report, machine
from bench.api.history import load_history, write_registry
from bench.api.memory import influx_quiet
from citysense.children import cpu_seconds
from citysense.servers import LocalServers
from common.influx import AsyncInfluxClient, InfluxClient, InfluxConfig, quote_ident
from common.schema import Retention, ensure_schema
from device_profiles import Profile, load_profiles
from simulators.city import DISTRICTS

BOUND_S = 5.0  # the start the issue allows
TIMEOUT_S = 300.0
LOOKBACK_NS = int(ApiSettings.model_fields["api_latest_lookback"].default * 1e9)

Shape = Callable[[Profile, int, str], q.Query]


@dataclass(frozen=True, slots=True)
class Round:
    rows: int
    wall_s: float
    influx_cpu_s: float
    client_cpu_s: float


def every_field(profile: Profile, since: int, district: str) -> q.Query:
    return q.latest_readings(profile, since, district=district)


def one_field(profile: Profile, since: int, district: str) -> q.Query:
    """every_field's query, asking the profile's first required field alone."""
    full = every_field(profile, since, district)
    field = next(name for name, f in profile.fields.items() if f.required)
    text = full.text.replace("SELECT * ", f"SELECT {quote_ident(field)} ", 1)
    assert text != full.text, "the full load's query no longer starts with SELECT *"
    return q.Query(text, full.params)


async def _load(config: InfluxConfig, shape: Shape, parts: Sequence[tuple[Profile, str]]) -> int:
    gate = asyncio.Semaphore(ApiSettings.model_fields["api_query_concurrency"].default)
    since = time.time_ns() - LOOKBACK_NS
    rows = 0
    influx = AsyncInfluxClient(config)

    async def part(profile: Profile, district: str) -> None:
        nonlocal rows
        async with gate:
            query = shape(profile, since, district)
            async for found in q.fetch_chunks(influx, query, LOAD_SLICE, TIMEOUT_S):
                rows += sum(len(series.values) for series in found)

    try:
        await asyncio.gather(*(part(p, d) for p, d in parts))
    finally:
        await influx.aclose()
    return rows


def measure(
    servers: LocalServers, config: InfluxConfig, shape: Shape, parts: Sequence[tuple[Profile, str]]
) -> Round:
    influx_before, client_before = cpu_seconds(servers.influxdb.pid), time.process_time()
    began = time.perf_counter()
    rows = asyncio.run(_load(config, shape, parts))
    return Round(
        rows,
        time.perf_counter() - began,
        cpu_seconds(servers.influxdb.pid) - influx_before,
        time.process_time() - client_before,
    )


def _stored_parts(config: InfluxConfig) -> list[tuple[Profile, str]]:
    """(profile, district) of every query the API's full load sends here: one per profile and
    district stored. The simulated city has devices of every profile in every district (18 parts
    in bench.api_memory's log); at 100,000 devices no part is split (`api_load_series`)."""
    profiles = load_profiles()
    with InfluxClient(config) as client:
        ensure_schema(client, Retention(), profiles)
    return [(p, d.name) for p in profiles.values() for d in DISTRICTS]


def run(args: argparse.Namespace) -> None:
    report = Report()
    report.section(f"Setup: {machine()}")
    with tempfile.TemporaryDirectory(prefix="citysense-full-load-") as tmp:
        home = Path(tmp)
        servers = LocalServers.create(home / "servers", root="bench")
        servers.start()
        try:
            _, devices = write_registry(report, home, args.devices)
            config = InfluxConfig(url=servers.influxdb.url, database=DATABASE)
            parts = _stored_parts(config)
            points, _, seconds = load_history(servers, devices, 0.0, 3600, 2)
            report.add("latest readings written", f"{points:,} points in {seconds:.1f} s")
            shapes: dict[str, Shape] = {"every field": every_field, "one field": one_field}
            rounds: dict[str, list[Round]] = {name: [] for name in shapes}
            report.section(f"The full load's {len(parts)} queries, nothing else")
            for n in range(args.rounds):
                for name, shape in shapes.items():
                    waited, quiet = influx_quiet(servers)  # not its roll-ups' pass, if any
                    if not quiet:
                        raise RuntimeError(f"InfluxDB still busy after {waited:.0f} s")
                    got = measure(servers, config, shape, parts)
                    if got.rows != len(devices):
                        raise RuntimeError(f"{name}: {got.rows:,} rows for {len(devices):,}")
                    rounds[name].append(got)
                    report.add(
                        f"round {n + 1}, {name}",
                        f"{got.wall_s:.2f} s wall = {got.wall_s / BOUND_S:.2f} x {BOUND_S:g} s",
                        f"InfluxDB CPU {got.influx_cpu_s:.2f} s, client CPU "
                        f"{got.client_cpu_s:.2f} s, {got.rows:,} rows",
                    )
            report.section("Median of the rounds")
            for name, done in rounds.items():
                wall = statistics.median(r.wall_s for r in done)
                report.add(
                    name,
                    f"{wall:.2f} s wall = {wall / BOUND_S:.2f} x {BOUND_S:g} s",
                    f"InfluxDB CPU {statistics.median(r.influx_cpu_s for r in done):.2f} s",
                )
        finally:
            servers.stop()
    report.print()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


if __name__ == "__main__":
    run(parse_args())
