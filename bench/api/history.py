"""Steps 1 and 2: a registry of the city's devices, and their history written straight into
InfluxDB as line protocol (not through MQTT), from the simulators' device models."""

from __future__ import annotations

import multiprocessing
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from bench.api.constants import DATABASE, LATEST_SPREAD_S, WRITE_BATCH
from bench.api.figures import Report
from citysense.servers import LocalServers
from common.errors import InfluxUnavailable
from common.influx import InfluxClient, InfluxConfig
from common.schema import Retention, ensure_schema, withdraw_rows_whole
from device_profiles import Device, load_profiles, load_registry
from ingest.changes import change_lines
from ingest.latest import LatestRows
from ingest.stages import Enriched
from simulators.city import DISTRICTS, write_city
from simulators.models import DEFAULT_UTC_OFFSET_HOURS, ProfileModel
from wire.changes import window_of
from wire.lineproto import fields as encode_fields
from wire.lineproto import tag as encode_tag
from wire.retention import CHANGES, LATEST

Row = tuple[int, str, str, str]  # index, device_id, profile, district


def write_registry(report: Report, home: Path, count: int) -> tuple[Path, list[Device]]:
    """`count` devices over the city's districts (simulators.city); (registry file, devices)."""
    registry = home / "city.csv"
    with registry.open("w") as out:
        write_city(out, count)
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
    return registry, devices


def load_and_count(
    report: Report,
    servers: LocalServers,
    devices: Sequence[Device],
    *,
    hours: float,
    every_s: int,
    loaders: int,
) -> None:
    """Load the history, then count what InfluxDB stored."""
    print("loading history ...", flush=True)
    points, size, seconds = load_history(servers, devices, hours, every_s, loaders)
    steps = int(hours * 3600 // every_s)
    report.add(
        "history loaded (line protocol straight to InfluxDB)",
        f"{points:,} points in {seconds:.1f} s = {points / seconds:,.0f} points/s",
        f"every device: {steps + 1} readings, one each {every_s} s over "
        f"{hours:g} h, the newest within {LATEST_SPREAD_S} s of the load; "
        f"{size / 1e6:,.0f} MB, {loaders} writer processes",
    )
    stored = count_stored(servers)
    report.add(
        "stored (count query)",
        f"{sum(stored.values()):,} points",
        ", ".join(f"{k} {v:,}" for k, v in stored.items()),
    )


Job = tuple[str, str, list[Row], dict[str, Device] | None, int, int, int]


def _history_part(job: Job) -> tuple[int, int]:
    """Write the history of some devices; (points, bytes). Runs in a worker process. With a
    registry (the devices of its rows), each batch is stored as ingest stores one: readings,
    their latest rows, then their change marks (ingest.worker), the rows kept by ingest's code."""
    influx_url, database, rows, registry, now_ms, steps, every_s = job
    profiles = load_profiles()
    models = {n: ProfileModel(p, DEFAULT_UTC_OFFSET_HOURS) for n, p in profiles.items()}
    points = size = 0
    lines: list[str] = []
    readings: list[Enriched] = []
    keeper = None
    if registry is not None:
        devices = registry
        # One writer tag over every part, as one ingest worker keeps them: each part's devices
        # are its own, so a row still moves only forward. A tag per part would be 16 writers'
        # series for the API's start to read (256 a profile each).
        keeper = LatestRows("bench-ingest", profiles, lambda: devices)
    with InfluxClient(InfluxConfig(url=influx_url, database=database, timeout=120)) as client:
        if keeper is not None:
            keeper.resume(client)

        def flush() -> None:
            nonlocal size
            body = ("\n".join(lines)).encode()
            _write(client, body)
            size += len(body)
            if keeper is not None:
                pending = keeper.rows(readings)
                _write(client, "\n".join(pending.lines).encode(), LATEST)
                keeper.stored(pending)
                changed = {(r.measurement, r.district, window_of(r.time_ns)) for r in readings}
                _write(client, "\n".join(change_lines(changed)).encode(), CHANGES)
            lines.clear()
            readings.clear()

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
                values = model.reading(ts)
                lines.append(f"{series}{encode_fields(values)} {ts * 1_000_000}")
                if keeper is not None:
                    at = ts * 1_000_000
                    readings.append(Enriched(profile.measurement, device_id, district, at, values))
            points += steps + 1
            if len(lines) >= WRITE_BATCH:
                flush()
        if lines:
            flush()
    return points, size


def _write(client: InfluxClient, body: bytes, policy: str | None = None) -> None:
    """A write, tried again after InfluxDB timed out on it, as ingest would (the same points
    again: nothing doubles): at 1,000,000 devices, with millions of rows held, InfluxDB once
    answered a write of this backfill with its own 500 "timeout"."""
    for attempt in range(5):
        try:
            client.write(body, policy=policy)
            return
        except InfluxUnavailable:
            if attempt == 4:
                raise
            time.sleep(2**attempt)


def load_history(
    servers: LocalServers,
    devices: Sequence[Device],
    hours: float,
    every_s: int,
    processes: int,
    *,
    database: str = DATABASE,
    as_ingest: bool = False,
) -> tuple[int, int, float]:
    """The history written into `database`, set up as a deployment has it: straight into
    InfluxDB (without latest rows, as after an import), or, `as_ingest`, stored as ingest
    stores it (readings, rows, marks, a batch at a time) into a database set up empty."""
    measurements = [p.measurement for p in load_profiles().values()]
    with InfluxClient(InfluxConfig(url=servers.influxdb.url, database=database)) as client:
        # The database's shape as a deployment has it (`citysense schema`): the retention
        # policies every reader names (change marks, rollups), readings in the default one.
        report = ensure_schema(client, Retention(), measurements)
        if as_ingest and not report.rows_whole:
            raise RuntimeError(f"database {database!r} is not new: its rows are not whole")
        if not as_ingest:
            # Written straight into InfluxDB, without latest rows: as after an import, or a
            # database of a version before them, the API's first start reads them in full.
            withdraw_rows_whole(client)
    rows: list[Row] = [(n, d.device_id, d.profile, d.district) for n, d in enumerate(devices)]
    steps = int(hours * 3600 // every_s)
    now_ms = time.time_ns() // 1_000_000
    parts = max(processes * 8, 1)
    jobs: list[Job] = [
        (
            servers.influxdb.url,
            database,
            rows[k::parts],
            {d.device_id: d for d in devices[k::parts]} if as_ingest else None,
            now_ms,
            steps,
            every_s,
        )
        for k in range(parts)
    ]
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
