"""What the latest rows' `has` column (wire.latest) costs a start that reads the rows.

    .venv/bin/python -m bench.rows_has --devices 100000 --writers 3 --rounds 4

Rows of `--writers` ingest writers for `--devices` devices, every field the simulators give,
written by ingest's own keeper (ingest.latest) into one InfluxDB. Then, in alternating rounds,
the rows are read as a start reads them (api.live.service: every profile and bucket piece,
two at a time, in chunks) with the query a start sends and with the same query without the
`has` column — the baseline: what a start read before `has`. Each read's wall time and
InfluxDB's CPU are reported, and their difference in the same round.

The reader's side is measured on the answer of one read with `has`, parsed by api.live.rows as
a start parses it, twice: as it came (each row's absent fields checked against its mask), and
with every mask taken away (the rows taken whole, as rows written before `has` are) — the
same columns parsed either way, so the difference is the mask's check alone. Best of three.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from api.core import query as q
from api.live import rows as live_rows
from bench.api.constants import DATABASE
from bench.api.memory import worker_rows
from citysense.children import cpu_seconds
from citysense.servers import LocalServers
from common.influx import (
    AsyncInfluxClient,
    InfluxClient,
    InfluxConfig,
    Regex,
    Series,
    quote_ident,
)
from common.schema import Retention, ensure_schema
from device_profiles import Device, Profile, load_profiles
from wire import latest as layout

CHUNK = 2000  # rows a chunk, as a start asks
AT_ONCE = 2  # pieces read at once, as a start reads them (one per core here)
KINDS = ["streetlight"] * 6 + ["water_pipe"] * 2 + ["power_meter"] * 2


@dataclass(frozen=True, slots=True)
class Read:
    rows: int
    wall_s: float
    influx_cpu_s: float


def _devices(n: int) -> list[Device]:
    return [
        Device(
            device_id=f"D-{k:06d}",
            profile=KINDS[k % len(KINDS)],
            district="North",
            latitude=30.0,
            longitude=120.0,
        )
        for k in range(n)
    ]


def _write_rows(
    servers: LocalServers, config: InfluxConfig, devices: list[Device], writers: int
) -> None:
    """Each writer's rows, an hour older than the one before's (bench.api.memory's)."""
    with InfluxClient(config) as client:
        ensure_schema(client, Retention(readings="INF"), load_profiles())
    for w in range(writers):
        worker_rows(servers, devices, f"ingest-{w}", hours=w)


def _without_has(query: q.Query) -> q.Query:
    """The start's query without the `has` column: what a start asked before it."""
    column = f"{quote_ident(layout.HAS)}, "
    if column not in query.text:
        raise RuntimeError(f"the rows' query no longer selects {layout.HAS}: {query.text}")
    return q.Query(query.text.replace(column, "", 1), query.params)


async def _read(
    config: InfluxConfig, profiles: Iterable[Profile], with_has: bool, pid: int
) -> tuple[Read, list[tuple[Profile, list[Series]]]]:
    client = AsyncInfluxClient(config)
    gate = asyncio.Semaphore(AT_ONCE)
    answers: list[tuple[Profile, list[Series]]] = []

    async def piece(profile: Profile, buckets: Regex) -> None:
        query = q.latest_rows(profile, buckets, "")
        if not with_has:
            query = _without_has(query)
        got: list[Series] = []
        async with gate:
            async for series in q.fetch_chunks(client, query, CHUNK, 120):
                got.extend(series)
        answers.append((profile, got))

    before, began = cpu_seconds(pid), time.perf_counter()
    try:
        await asyncio.gather(
            *(piece(p, b) for p in profiles for b in live_rows.PIECES),
        )
    finally:
        await client.aclose()
    wall = time.perf_counter() - began
    rows = sum(len(s.values) for _, got in answers for s in got)
    return Read(rows, wall, cpu_seconds(pid) - before), answers


def _unmasked(series: Series) -> Series:
    """The rows with no `has` value: taken whole, as rows written before `has` are."""
    at = series.columns.index(layout.HAS)
    values = tuple((*row[:at], None, *row[at + 1 :]) for row in series.values)
    return replace(series, values=values)


def _parse_s(answers: list[tuple[Profile, list[Series]]]) -> float:
    best = float("inf")
    for _ in range(3):
        began = time.process_time()
        for profile, got in answers:
            live_rows.rows_of(profile, got, 0)
        best = min(best, time.process_time() - began)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--writers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    profiles = load_profiles()
    devices = _devices(args.devices)
    with tempfile.TemporaryDirectory() as home:
        servers = LocalServers.create(Path(home) / "servers", root="bench")
        servers.influxdb.start()
        try:
            config = InfluxConfig(url=servers.influxdb.url, database=DATABASE, timeout=120)
            _write_rows(servers, config, devices, args.writers)
            time.sleep(5)  # InfluxDB's cache snapshot after the writes, before any read
            process = servers.influxdb.process
            if process is None:
                raise RuntimeError("InfluxDB is not running")
            _report(config, list(profiles.values()), process.pid, args.rounds)
        finally:
            servers.influxdb.stop()


def _report(config: InfluxConfig, profiles: list[Profile], pid: int, rounds: int) -> None:
    extra_wall, extra_cpu = [], []
    answers: list[tuple[Profile, list[Series]]] = []
    for n in range(rounds):
        bare, _ = asyncio.run(_read(config, profiles, False, pid))
        has, answers = asyncio.run(_read(config, profiles, True, pid))
        if bare.rows != has.rows:
            raise RuntimeError(f"the two reads found {bare.rows} and {has.rows} rows")
        extra_wall.append(has.wall_s - bare.wall_s)
        extra_cpu.append(has.influx_cpu_s - bare.influx_cpu_s)
        print(
            f"round {n + 1}: {has.rows} rows; without has {bare.wall_s:.2f} s "
            f"(InfluxDB CPU {bare.influx_cpu_s:.2f} s), with has {has.wall_s:.2f} s "
            f"(InfluxDB CPU {has.influx_cpu_s:.2f} s): {has.wall_s / bare.wall_s:.2f}x wall",
            flush=True,
        )
    print(
        f"with has, mean over {rounds} rounds: wall {statistics.mean(extra_wall):+.2f} s, "
        f"InfluxDB CPU {statistics.mean(extra_cpu):+.2f} s"
    )
    rows = sum(len(s.values) for _, got in answers for s in got)
    masked = _parse_s(answers)
    whole = _parse_s([(p, [_unmasked(s) for s in got]) for p, got in answers])
    print(
        f"parsing {rows} rows (best of 3): masks checked {masked:.2f} s "
        f"({masked / rows * 1e6:.2f} us a row), taken whole {whole:.2f} s "
        f"({whole / rows * 1e6:.2f} us a row): the check {(masked - whole) / rows * 1e6:+.2f} us"
    )


if __name__ == "__main__":
    main()
