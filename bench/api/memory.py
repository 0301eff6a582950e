"""bench/api_memory.py's steps: the API started over an empty registry (the baseline) and over
the city, each measured from outside (start time, resident memory from /proc)."""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from api.core.readings import Value
from api.core.times import format_rfc3339
from api.live.snapshot import FILE_NAME as SNAPSHOT
from bench.api.constants import DATABASE, HOST, ROOT, WRITE_BATCH
from bench.api.figures import Report, machine, ms
from bench.api.history import load_history, write_registry
from bench.api.processes import Stack
from citysense.children import Child, Children, cpu_seconds, module_argv, start_citysense
from citysense.servers import LocalServers, free_port
from common.influx import InfluxClient, InfluxConfig, quote_ident
from common.mqtturl import MqttUrl
from common.schema import Retention, ensure_schema, withdraw_rows_whole
from device_profiles import Device, FieldType, Profile, load_profiles
from ingest.announce import Announcer
from ingest.changes import change_lines
from ingest.latest import LatestRows
from ingest.stages import Enriched
from simulators.city import DISTRICTS, write_city
from simulators.models import DEFAULT_UTC_OFFSET_HOURS, ProfileModel
from wire import latest as latest_layout
from wire.changes import window_of
from wire.lineproto import Line, line, parse_line
from wire.retention import CHANGES, LATEST
from wire.statefeed import StoredReading
from wire.topics import TopicLayout

MIB = 1024 * 1024
EMPTY_DB = "citysense_empty"
FRESH_DB = "citysense_new"
QUIET_CPU = 0.1  # of a core: InfluxDB "quiet" below this
QUIET_LOOK_S = 1.0
QUIET_MAX_S = 900.0  # a roll-ups' pass at 1,000,000 devices takes minutes


@dataclass
class Started:
    child: Child
    base: str
    healthy: float  # seconds from process start until /health answered 200
    serving: float  # ... until GET /devices answered 200 (latest state loaded)
    rss_mb: float  # resident memory once serving
    cpu: float  # CPU seconds the API used until serving
    influx_cpu: float  # ... and InfluxDB meanwhile (answering the start-up load)
    said: list[str]  # its log lines about the latest state
    waited: float  # seconds waited before the start for InfluxDB to be quiet
    quiet: bool  # whether it was by then


def run(args: argparse.Namespace) -> None:
    """Everything it starts is stopped at the end, pass or fail; then the report is printed."""
    report = Report()
    children = Children()
    print(f"machine: {machine()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="citysense-api-memory-") as tmp:
        home = Path(tmp)
        servers = LocalServers.create(home / "servers", root="bench")
        servers.start()
        try:
            measure(report, servers, children, home, args)
        finally:
            children.stop_all()
            servers.stop()
    report.print()


def measure(
    report: Report, servers: LocalServers, children: Children, home: Path, args: argparse.Namespace
) -> None:
    report.section(f"Setup: {machine()}")
    registry, devices = write_registry(report, home, args.devices)
    # As ingest sets it up at start: the change marks' policy is where the API reads what was
    # written since its snapshot.
    with InfluxClient(InfluxConfig(url=servers.influxdb.url, database=DATABASE)) as client:
        ensure_schema(client, Retention(), load_profiles())
    print("writing one reading per device ...", flush=True)
    points, _, seconds = load_history(servers, devices, 0.0, 3600, args.loaders)
    report.add("latest readings written", f"{points:,} points in {seconds:.1f} s")
    report.section("API start (citysense api, one uvicorn process)")
    baseline = start_baseline(Stack(report, servers, children, home, registry), args.timeout)
    baseline.child.stop()
    report.add(
        "empty registry and database: start -> /health 200",
        ms(baseline.healthy),
        f"API CPU {baseline.cpu:,.1f} s",
    )
    report.add(
        "empty registry and database: resident memory (baseline)", f"{baseline.rss_mb:,.1f} MB"
    )
    data = {"CITYSENSE_API_DATA_DIR": str(home / "api-data")}
    stack = Stack(report, servers, children, home, registry)
    city = start(stack, args.timeout, "city", data)
    describe(report, city, baseline.rss_mb, len(devices), "no snapshot: full load")
    district_page(report, city, DISTRICTS[0].name)
    single_device(report, city, devices[len(devices) // 2].device_id)
    report.add("resident memory after the requests", f"{city.child.rss_mb():,.1f} MB")
    report.add("peak resident memory (VmHWM)", f"{city.child.peak_rss_mb():,.1f} MB")
    # After its full load the API writes the latest rows of its state (api.live.rows).
    waited = rows_whole(servers, args.timeout)
    report.add("latest rows whole (written after the full load)", f"waited {waited:.1f} s more")
    city.child.stop()  # writes its snapshot at shutdown
    snapshot = home / "api-data" / SNAPSHOT
    report.add("snapshot at shutdown", f"{snapshot.stat().st_size:,} bytes")
    fresh = write_fresh(servers, devices, DISTRICTS[0].name)
    report.add(
        "written while the API was down",
        f"a newer reading of {len(fresh):,} devices",
        f"{DISTRICTS[0].name}'s streetlights, with their change marks and the feed's "
        "announcement, as ingest writes them",
    )
    city = start(stack, args.timeout, "restart", data)
    describe(report, city, baseline.rss_mb, len(devices), "from the snapshot")
    district_page(report, city, DISTRICTS[0].name, fresh)
    single_device(report, city, devices[len(devices) // 2].device_id)
    report.add("peak resident memory (VmHWM)", f"{city.child.peak_rss_mb():,.1f} MB")
    city.child.stop()
    restart_every_part(report, stack, baseline, devices, data=data, timeout=args.timeout)
    new_replica(report, stack, baseline, devices, data=data, timeout=args.timeout)
    from_rows(report, stack, baseline, devices, timeout=args.timeout)
    first_start_of_a_new_city(report, stack, baseline, devices, args)
    first_start_after_an_upgrade(report, stack, baseline, devices, timeout=args.timeout)


def first_start_of_a_new_city(
    report: Report, stack: Stack, baseline: Started, devices: list[Device], args: argparse.Namespace
) -> None:
    """The API's very first start over a city this version stored from the beginning: a database
    set up empty (it says its rows whole: common.schema), the same devices' readings stored as
    ingest stores them (readings, rows, marks); no snapshot, no peer. Against the full load of
    the first start above, the same readings read in full as after an import."""
    print("storing the city again, as ingest does, into a new database ...", flush=True)
    points, _, seconds = load_history(
        stack.servers, devices, 0.0, 3600, args.loaders, database=FRESH_DB, as_ingest=True
    )
    report.add(
        "a new database, set up empty",
        f"{points:,} readings in {seconds:.1f} s",
        "each batch's readings, then its latest rows and change marks, as ingest stores them",
    )
    extra = {"CITYSENSE_INFLUX_DB": FRESH_DB, "CITYSENSE_API_DATA_DIR": str(stack.home / "fresh")}
    how = "its first start ever, a new city"
    start_and_page(stack, baseline, devices, "first-start", how, extra=extra, timeout=args.timeout)


def first_start_after_an_upgrade(
    report: Report, stack: Stack, baseline: Started, devices: list[Device], *, timeout: float
) -> None:
    """The API's first start over readings no writer of this version stored (a database of a
    version before the latest rows, or an import), once the deployment's set-up built the rows
    from them (`citysense schema`, api.live.rebuild), as compose's one-shot `influxdb-init` does
    before any API starts: the build timed as a step of its own, then the start, against the
    full load of step 2 (the same readings read by the API itself)."""
    config = InfluxConfig(url=stack.servers.influxdb.url, database=DATABASE)
    with InfluxClient(config) as client:
        client.query(f"DROP MEASUREMENT {quote_ident(latest_layout.MEASUREMENT)}")
        withdraw_rows_whole(client)
    report.add(
        "the latest rows dropped",
        "every writer's, and the point saying them whole",
        "as a database of a version before them has it",
    )
    print("building the latest rows from the readings (citysense schema) ...", flush=True)
    influx = stack.servers.influxdb.process
    influx_before = cpu_seconds(influx.pid) if influx is not None else 0.0
    cpu_before = _children_cpu()
    began = time.perf_counter()
    done = subprocess.run(
        module_argv("citysense.cli", "schema", "--no-users"),
        env=stack.env("citysense-api"),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    seconds = time.perf_counter() - began
    said = (done.stdout.strip().splitlines() or [""])[-1]
    if done.returncode != 0 or not said.endswith(": whole"):
        raise RuntimeError(
            f"citysense schema did not build the rows ({done.returncode}): {said!r} "
            f"{done.stderr[-2000:]}"
        )
    influx_cpu = cpu_seconds(influx.pid) - influx_before if influx is not None else 0.0
    report.add("  citysense schema said", said)
    report.add(
        f"{len(devices):,} devices: the set-up's build of the latest rows",
        ms(seconds),
        f"once per database; CPU: citysense schema {_children_cpu() - cpu_before:,.1f} s, "
        f"InfluxDB {influx_cpu:,.1f} s",
    )
    empty = {"CITYSENSE_API_DATA_DIR": str(stack.home / "api-data-upgraded")}
    how = "its first start after the set-up's build"
    start_and_page(stack, baseline, devices, "after-upgrade", how, extra=empty, timeout=timeout)
    after_the_upgrade(report, stack, baseline, devices, timeout=timeout)


def after_the_upgrade(
    report: Report, stack: Stack, baseline: Started, devices: list[Device], *, timeout: float
) -> None:
    """The compose stack's two ingest workers, sharing the subscription, then store a newer
    reading of every device, each keeping rows: a start reads the build's rows and both
    workers' until a running API compacts the build's (api.live.compact) to the devices no
    worker holds a row as new for, here none."""
    for writer in ("bench-worker-1", "bench-worker-2"):
        report.add(
            "written after the upgrade",
            f"{writer}'s rows: {worker_rows(stack.servers, devices, writer, 0):,}",
            "a newer reading of every device, every field (simulators.models)",
        )
    compacting = {
        "CITYSENSE_API_DATA_DIR": str(stack.home / "api-data-compacting"),
        "CITYSENSE_API_ROWS_COMPACT_AFTER": "1",
    }
    config = InfluxConfig(url=stack.servers.influxdb.url, database=DATABASE)
    named = _named_full_load(config)
    city = start(stack, timeout, "upgraded-two-workers", compacting)
    describe(report, city, baseline.rss_mb, len(devices), "the build's rows and two workers'")
    began = time.perf_counter()
    while _named_full_load(config) == named:
        city.child.check()
        if time.perf_counter() - began > timeout:
            raise TimeoutError("the build's rows were not compacted")
        time.sleep(0.2)
    report.add(
        "  the build's rows compacted by that API",
        f"{time.perf_counter() - began:.1f} s after it served",
        f"{_rows_of(config, _named_full_load(config)):,} rows named now "
        f"(CITYSENSE_API_ROWS_COMPACT_AFTER=1 here; 300 s by default)",
    )
    city.child.stop()
    empty = {"CITYSENSE_API_DATA_DIR": str(stack.home / "api-data-compacted")}
    how = "two workers' rows, the build's compacted"
    start_and_page(
        stack, baseline, devices, "upgraded-compacted", how, extra=empty, timeout=timeout
    )


def _named_full_load(config: InfluxConfig) -> str:
    query = f'SELECT * FROM "{LATEST}"."{latest_layout.COMPLETE}"'
    with InfluxClient(config) as client:
        points = [point for series in client.query(query)[0] for point in series.rows()]
    return latest_layout.recorded_rows(points[0]) if points else ""


def _rows_of(config: InfluxConfig, writer: str) -> int:
    query = (
        f'SELECT count("at") FROM "{LATEST}"."{latest_layout.MEASUREMENT}" '
        f"WHERE \"writer\" = '{writer}'"  # a full load's tag: digits and hex (wire.latest)
    )
    with InfluxClient(config) as client:
        return sum(int(str(row[1])) for series in client.query(query)[0] for row in series.values)


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def rows_whole(servers: LocalServers, timeout: float) -> float:
    """Seconds until the latest rows are whole (the point that says so is written last)."""
    began = time.perf_counter()
    config = InfluxConfig(url=servers.influxdb.url, database=DATABASE)
    query = f'SELECT * FROM "{LATEST}"."{latest_layout.COMPLETE}"'
    with InfluxClient(config) as client:
        while not any(series.values for series in client.query(query)[0]):
            if time.perf_counter() - began > timeout:
                raise TimeoutError("the latest rows were not made whole")
            time.sleep(0.1)
    return time.perf_counter() - began


def from_rows(
    report: Report, stack: Stack, baseline: Started, devices: list[Device], *, timeout: float
) -> None:
    """A replica with no snapshot and no peer, after the full load made the latest rows whole
    and ingest (imitated: store_as_ingest) kept them since: against the full load of the first
    start, same run. A newer reading of every part is written just before it starts."""
    fresh = write_every_part(stack.servers, devices, announced=True)
    report.add(
        "written just before",
        f"a newer reading of {len(fresh):,} devices",
        "one per (profile, district), with their latest rows and change marks, as ingest does",
    )
    empty = {"CITYSENSE_API_DATA_DIR": str(stack.home / "api-data-rows")}
    city = start(stack, timeout, "from-rows", empty)
    describe(
        report, city, baseline.rss_mb, len(devices), "no snapshot, no peer: from the latest rows"
    )
    district_page(report, city, DISTRICTS[0].name, fresh)
    single_device(report, city, devices[len(devices) // 2].device_id)
    report.add("peak resident memory (VmHWM)", f"{city.child.peak_rss_mb():,.1f} MB")
    city.child.stop()
    # Ingest workers share the subscription, so each stores some readings of every device:
    # every device gets a row of each (older ones here, which the reader reads and discards).
    # Three writers: the compose stack's two workers over a city whose rows a full load (or
    # the set-up's build, after an upgrade) wrote too.
    for writers in (2, 3):
        older = worker_rows(stack.servers, devices, f"bench-ingest-{writers}", writers - 1)
        report.add(
            "written just before",
            f"another worker's rows: {older:,}",
            f"{writers - 1} h older each, every field of a reading (simulators.models)",
        )
        empty = {"CITYSENSE_API_DATA_DIR": str(stack.home / f"api-data-rows-{writers}")}
        how = f"from the latest rows of {writers} writers"
        label = f"from-rows-{writers}"
        start_and_page(
            stack, baseline, devices, label, how, extra=empty, timeout=timeout, fresh=fresh
        )
    # Not held by InfluxDB through the steps after (millions of rows at 1,000,000 devices).
    config = InfluxConfig(url=stack.servers.influxdb.url, database=DATABASE)
    with InfluxClient(config) as client:
        client.query(
            f"DROP SERIES FROM {quote_ident(latest_layout.MEASUREMENT)} "
            f"WHERE {quote_ident(latest_layout.WRITER_TAG)} =~ /^bench-ingest-[23]$/"
        )


def worker_rows(servers: LocalServers, devices: list[Device], writer: str, hours: float) -> int:
    """A row of every device under writer tag `writer`, its reading `hours` older than now,
    with every field a reading of its profile has (simulators.models): a row costs InfluxDB
    per field it holds."""
    profiles = load_profiles()
    models = {n: ProfileModel(p, DEFAULT_UTC_OFFSET_HOURS) for n, p in profiles.items()}
    registry = {d.device_id: d for d in devices}
    keeper = LatestRows(writer, profiles, lambda: registry)
    at_ms = time.time_ns() // 1_000_000 - int(hours * 3_600_000)
    readings = [
        Enriched(
            d.profile,
            d.device_id,
            d.district,
            at_ms * 1_000_000,
            models[d.profile].device(random.Random(n)).reading(at_ms),
        )
        for n, d in enumerate(devices)
    ]
    with InfluxClient(InfluxConfig(url=servers.influxdb.url, database=DATABASE)) as client:
        keeper.resume(client)
        rows = keeper.rows(readings).lines
        for start_at in range(0, len(rows), WRITE_BATCH):
            body = "\n".join(rows[start_at : start_at + WRITE_BATCH]).encode()
            client.write(body, policy=LATEST)
    return len(rows)


def restart_every_part(
    report: Report,
    stack: Stack,
    baseline: Started,
    devices: list[Device],
    *,
    data: dict[str, str],
    timeout: float,
) -> None:
    # A live city writes into every district between a snapshot and a restart: every part's
    # marks moved. Announced on the feed, as ingest does, the broker keeps them for the API's
    # session; written without (as replay writes, or while the session expired), the restart
    # queries InfluxDB for each part.
    for announced in (True, False):
        fresh = write_every_part(stack.servers, devices, announced=announced)
        how = "announced on the feed" if announced else "not announced"
        report.add(
            "written while the API was down",
            f"a newer reading of {len(fresh):,} devices",
            f"one per (profile, district): every part moved, with change marks, {how}",
        )
        city = start(stack, timeout, f"restart-every-part-{announced}", data)
        describe(
            report,
            city,
            baseline.rss_mb,
            len(devices),
            f"from the snapshot, every part moved, {how}",
        )
        district_page(report, city, DISTRICTS[0].name, fresh)
        city.child.stop()


def new_replica(
    report: Report,
    stack: Stack,
    baseline: Started,
    devices: list[Device],
    *,
    data: dict[str, str],
    timeout: float,
) -> None:
    """A replica started with no snapshot of its own, from a running one's state
    (CITYSENSE_API_STATE_PEER, api.live.peer), after the running one took a newer reading of
    every part from the feed: against the full load of the first start, same run."""
    first = start(stack, timeout, "peer", data)
    fresh = write_every_part(stack.servers, devices, announced=True)
    time.sleep(1.0)  # the running replica takes them from its feed
    district_page(report, first, DISTRICTS[0].name, fresh)
    new = {
        "CITYSENSE_API_DATA_DIR": str(stack.home / "api-data-new"),
        "CITYSENSE_API_STATE_PEER": first.base,
    }
    second = start(stack, timeout, "new-replica", new)
    describe(report, second, baseline.rss_mb, len(devices), "a new replica, from a running one")
    district_page(report, second, DISTRICTS[0].name, fresh)
    report.add("peak resident memory (VmHWM)", f"{second.child.peak_rss_mb():,.1f} MB")
    second.child.stop()
    first.child.stop()


def _some_value(profile: Profile) -> tuple[str, Value]:
    """A field of `profile` and a value it accepts (as ingest would store it)."""
    name, spec = next(iter(sorted(profile.fields.items())))
    if spec.type is FieldType.NUMBER:
        return name, float(spec.range[0]) if spec.range else 1.0
    if spec.type is FieldType.INTEGER:
        return name, int(spec.range[0]) if spec.range else 1
    if spec.type is FieldType.BOOLEAN:
        return name, True
    return name, spec.values[0] if spec.values else "x"


def write_every_part(
    servers: LocalServers, devices: list[Device], *, announced: bool
) -> dict[str, int]:
    """A newer reading of the first device of each (profile, district), then the change marks;
    device id -> its time (ns)."""
    profiles = load_profiles()
    base = time.time_ns() // 1_000_000 * 1_000_000
    first: dict[tuple[str, str], Device] = {}
    for d in devices:
        first.setdefault((d.profile, d.district), d)
    fresh = {d.device_id: base - n * 1_000_000 for n, d in enumerate(first.values())}
    lines = [
        line(
            profiles[d.profile].measurement,
            {"device_id": d.device_id, "district": d.district},
            dict([_some_value(profiles[d.profile])]),
            fresh[d.device_id],
        )
        for d in first.values()
    ]
    marks = change_lines(
        {
            (profiles[d.profile].measurement, d.district, window_of(fresh[d.device_id]))
            for d in first.values()
        }
    )
    store_as_ingest(servers, devices, lines, marks)
    if announced:
        announce(servers, [parse_line(text) for text in lines], marks)
    return fresh


def store_as_ingest(
    servers: LocalServers, devices: list[Device], lines: list[str], marks: list[str]
) -> None:
    """Readings, their latest rows (wire.latest), then their change marks: what ingest stores
    for a batch, in its order (ingest.worker), its rows kept by its own code."""
    registry = {d.device_id: d for d in devices}
    keeper = LatestRows("bench-ingest", load_profiles(), lambda: registry)
    points = [parse_line(text) for text in lines]
    readings = [
        Enriched(
            p.measurement, str(p.tags["device_id"]), str(p.tags["district"]), p.time_ns, p.fields
        )
        for p in points
    ]
    with InfluxClient(InfluxConfig(url=servers.influxdb.url, database=DATABASE)) as client:
        keeper.resume(client)
        rows = keeper.rows(readings).lines
        for at in range(0, len(lines), WRITE_BATCH):
            client.write("\n".join(lines[at : at + WRITE_BATCH]).encode())
        for at in range(0, len(rows), WRITE_BATCH):
            client.write("\n".join(rows[at : at + WRITE_BATCH]).encode(), policy=LATEST)
        client.write("\n".join(marks).encode(), policy=CHANGES)


def announce(servers: LocalServers, points: list[Line], marks: list[str]) -> None:
    """What ingest announces after storing `points` and `marks`: through its own Announcer,
    published as an ingest account (QoS 1 to the broker: every message reaches it)."""
    url = MqttUrl.parse(servers.mosquitto.url("citysense-ingest"))
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-ingest")
    url.configure(client)
    client.max_inflight_messages_set(100)
    client.connect(url.host, url.port)
    client.loop_start()
    sent: list[mqtt.MQTTMessageInfo] = []
    announcer = Announcer(
        lambda topic, payload: sent.append(client.publish(topic, payload, qos=1)),
        TopicLayout(ROOT).state_feed("bench-ingest"),
        "bench-ingest",
    )
    stored = [
        StoredReading(
            p.measurement, str(p.tags["device_id"]), str(p.tags["district"]), p.time_ns, p.fields
        )
        for p in points
    ]
    announcer.announce(stored, marks)
    for info in sent:
        info.wait_for_publish(timeout=60)
    client.disconnect()
    client.loop_stop()


def write_fresh(servers: LocalServers, devices: list[Device], district: str) -> dict[str, int]:
    """A newer reading for each streetlight of `district`, then its change marks (as ingest
    writes: readings first); device id -> its time (ns)."""
    base = time.time_ns() // 1_000_000 * 1_000_000
    fresh = {
        d.device_id: base - n * 1_000_000
        for n, d in enumerate(x for x in devices if x.profile == "streetlight")
        if d.district == district
    }
    lines = [
        line("streetlight", {"device_id": i, "district": district}, {"powerState": "on"}, t)
        for i, t in fresh.items()
    ]
    marks = change_lines({("streetlight", district, window_of(t)) for t in fresh.values()})
    store_as_ingest(servers, devices, lines, marks)
    announce(servers, [parse_line(text) for text in lines], marks)
    return fresh


def start_baseline(stack: Stack, timeout: float) -> Started:
    """The API over an empty registry and an empty database: with the city's database, it would
    parse the latest readings of every device only to discard them, and the memory that parse
    took counts in its resident memory thereafter (CPython keeps freed memory for reuse)."""
    empty = stack.home / "empty.csv"
    with empty.open("w") as out:
        write_city(out, 0)
    with InfluxClient(InfluxConfig(url=stack.servers.influxdb.url, database=EMPTY_DB)) as client:
        client.create_database()
    stack = Stack(stack.report, stack.servers, stack.children, stack.home, empty)
    return start(stack, timeout, "baseline", {"CITYSENSE_INFLUX_DB": EMPTY_DB})


def start(stack: Stack, timeout: float, label: str, extra: dict[str, str] | None = None) -> Started:
    """`citysense api` over `stack`'s registry, timed until /health and GET /devices answer 200."""
    print(f"starting the API ({label}) ...", flush=True)
    port = free_port()
    env = {
        **stack.env("citysense-api"),
        "CITYSENSE_API_AUTH": "off",
        # The readings are written once, at the run's start; a 1,000,000-device run lasts ~12
        # min, and the streetlights (60 s interval) were silent (3 x) by the second start: each
        # start after it raised 600,000 `silent` alarms (api.live.alarms), ~500 B each, which
        # is not the latest state this measures. Silence judged after 1,000 intervals.
        "CITYSENSE_API_SILENT_AFTER": "1000",
        **(extra or {}),
    }
    base = f"http://{HOST}:{port}"
    influx = stack.servers.influxdb.process
    waited, quiet = influx_quiet(stack.servers)
    influx_before = cpu_seconds(influx.pid) if influx is not None else 0.0
    started = time.perf_counter()
    child = stack.children.add(
        start_citysense(
            "api", "--host", HOST, "--port", str(port), "--log-level", "info",
            env=env, log=stack.home / f"api-{label}.log", name=f"the API ({label})",
        )
    )  # fmt: skip
    with httpx.Client(base_url=base, timeout=30) as client:
        child.wait_until(lambda: _answers(client, "/health"), timeout, "/health 200", 0.05)
        healthy = time.perf_counter() - started
        child.wait_until(lambda: _answers(client, "/devices"), timeout, "/devices 200", 0.05)
        serving = time.perf_counter() - started
    influx_cpu = cpu_seconds(influx.pid) - influx_before if influx is not None else 0.0
    said = [
        message
        for line in (stack.home / f"api-{label}.log").read_text(errors="replace").splitlines()
        if line.startswith("{")
        and (message := str(orjson.loads(line).get("msg", "")))
        and ("latest state" in message or "state snapshot" in message)
    ]
    return Started(
        child,
        base,
        healthy,
        serving,
        child.rss_mb(),
        child.cpu_seconds(),
        influx_cpu,
        said,
        waited,
        quiet,
    )


def influx_quiet(servers: LocalServers) -> tuple[float, bool]:
    """Wait (at most QUIET_MAX_S) until InfluxDB spends under QUIET_CPU of a core; (seconds
    waited, whether it is quiet). Its continuous queries (common.schema's roll-ups) run
    when they are created, when it starts and on their schedule (common.schema.DAILY): at
    100,000 devices they kept both cores busy for about two minutes, and a start measured
    meanwhile measured them."""
    influx = servers.influxdb.process
    began = time.perf_counter()
    if influx is None:
        return 0.0, True
    while True:
        before = cpu_seconds(influx.pid)
        time.sleep(QUIET_LOOK_S)
        if cpu_seconds(influx.pid) - before < QUIET_CPU * QUIET_LOOK_S:
            return time.perf_counter() - began, True
        if time.perf_counter() - began > QUIET_MAX_S:
            return time.perf_counter() - began, False


def _answers(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path, params={"limit": 1} if path == "/devices" else {}).is_success
    except httpx.TransportError:
        return False


def describe(report: Report, city: Started, baseline_mb: float, devices: int, how: str) -> None:
    # The API's own account of what it loaded from where, and how long each part took.
    for said in city.said:
        report.add("  the API logged", said)
    report.add(
        f"{devices:,} devices, {how}: InfluxDB quiet before the start",
        f"after {city.waited:.1f} s" if city.quiet else f"not after {city.waited:.0f} s",
        "its continuous queries (the roll-ups) or compactions ran meanwhile"
        if city.waited > 2 * QUIET_LOOK_S
        else "",
    )
    report.add(f"{devices:,} devices, {how}: start -> /health 200", ms(city.healthy))
    report.add(f"{devices:,} devices, {how}: start -> GET /devices 200", ms(city.serving))
    # The machine may be shared: CPU time says what the start cost whatever else ran.
    report.add(
        f"{devices:,} devices: CPU until serving",
        f"API {city.cpu:,.1f} s, InfluxDB {city.influx_cpu:,.1f} s",
        f"load average {os.getloadavg()[0]:.1f} at the end of the start",
    )
    above = (city.rss_mb - baseline_mb) * MIB
    report.add(
        f"{devices:,} devices: resident memory",
        f"{city.rss_mb:,.1f} MB",
        f"{above / MIB:,.1f} MB above the baseline = {above / devices:,.0f} bytes per device",
    )


def start_and_page(
    stack: Stack,
    baseline: Started,
    devices: list[Device],
    label: str,
    how: str,
    *,
    extra: dict[str, str],
    timeout: float,
    fresh: dict[str, int] | None = None,
) -> None:
    """A start measured and described, a district's page checked (`fresh`: as district_page),
    the API stopped."""
    city = start(stack, timeout, label, extra)
    describe(stack.report, city, baseline.rss_mb, len(devices), how)
    district_page(stack.report, city, DISTRICTS[0].name, fresh)
    city.child.stop()


def district_page(
    report: Report, city: Started, district: str, fresh: dict[str, int] | None = None
) -> None:
    """A district's first page at the maximum page size: answered, and as many as it says; the
    devices of `fresh` with exactly their fresh reading's time."""
    with httpx.Client(base_url=city.base, timeout=120) as client:
        began = time.perf_counter()
        response = client.get("/devices", params={"district": district, "limit": 1000})
        seconds = time.perf_counter() - began
    response.raise_for_status()
    body = response.json()
    with_reading = sum(1 for item in body["items"] if item["reading"] is not None)
    if with_reading != len(body["items"]):
        raise RuntimeError(
            f"{len(body['items']) - with_reading} devices of the page lack a reading"
        )
    stale = [
        item["device_id"]
        for item in body["items"]
        if item["device_id"] in (fresh or {})
        and item["reading"]["time"] != format_rfc3339((fresh or {})[item["device_id"]])
    ]
    if stale:
        raise RuntimeError(f"{len(stale)} devices lack the reading written while the API was down")
    report.add(
        f"GET /devices?district={district}&limit=1000",
        ms(seconds),
        f"{len(body['items'])} of {body['total']:,} devices, every one with its reading",
    )


def single_device(report: Report, city: Started, device_id: str) -> None:
    with httpx.Client(base_url=city.base, timeout=60) as client:
        began = time.perf_counter()
        response = client.get(f"/devices/{device_id}")
        seconds = time.perf_counter() - began
    response.raise_for_status()
    if response.json()["reading"] is None:
        raise RuntimeError(f"device {device_id} has no reading")
    report.add("GET /devices/{id}", ms(seconds))
