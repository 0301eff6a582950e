"""Step 4: requests from one client (and one concurrent run) about devices — latest state from
the API's in-process cache, paged and filtered; the GeoJSON of every streetlight; one device's
24 h history from InfluxDB — with the aggregations across devices (bench.api.aggregates) between
them, in this order."""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson

from bench.api.aggregates import bench_aggregates
from bench.api.figures import Report, Timings
from bench.api.timing import run_requests, timed_get
from device_profiles import Device
from simulators.city import DISTRICTS

DISTRICT_NAMES = [d.name for d in DISTRICTS]


def bench_requests(
    report: Report, base: str, devices: Sequence[Device], scale: float, concurrency: int
) -> None:
    rng = random.Random(3)  # one sequence of choices through every step, in this order
    with httpx.Client(base_url=base, timeout=120) as client:
        report.section("Latest state (in-process cache)")
        bench_pages(report, client, scale)
        bench_lists(report, client, rng, devices, scale)
        bench_concurrent(report, base, devices, scale, concurrency)
        bench_geojson(report, client, rng, devices, scale)
        asked = time.strftime("%H:%M:%S UTC", time.gmtime())
        bench_aggregates(report, client, DISTRICTS[0].name, max(3, int(5 * scale)))
        report.add("aggregates asked from", asked)
        bench_history(report, client, rng, devices, scale)


def bench_pages(report: Report, client: httpx.Client, scale: float) -> None:
    """One district, every page at the maximum page size (1000), all six districts."""
    pages = Timings()
    walks = Timings()
    rounds = max(1, round(2 * scale))
    district_size = 0
    for _ in range(rounds):
        for name in DISTRICT_NAMES:
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


def bench_lists(
    report: Report,
    client: httpx.Client,
    rng: random.Random,
    devices: Sequence[Device],
    scale: float,
) -> None:
    """A district's first page, filtered by profile or by status; one device."""
    small = run_requests(
        client,
        "/devices",
        [
            {"district": rng.choice(DISTRICT_NAMES), "limit": 100}
            for _ in range(int(200 * scale) + 1)
        ],
    )
    report.timings("GET /devices?district=D (default page, 100)", small)
    filtered = run_requests(
        client,
        "/devices",
        [
            {"district": rng.choice(DISTRICT_NAMES), "profile": "water_pipe", "limit": 1000}
            for _ in range(int(50 * scale) + 1)
        ],
    )
    report.timings("GET /devices?profile=water_pipe&district=D&limit=1000", filtered)
    by_status = run_requests(
        client,
        "/devices",
        [
            {"district": rng.choice(DISTRICT_NAMES), "status": "on_time", "limit": 1000}
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


def bench_concurrent(
    report: Report,
    base: str,
    devices: Sequence[Device],
    scale: float,
    concurrency: int,
) -> None:
    """The same district pages from several clients at once."""
    by_district = defaultdict(list)
    for d in devices:
        by_district[d.district].append(d)
    per_client = int(30 * scale) + 2

    def worker(k: int) -> list[float]:
        local = random.Random(k)
        out = []
        with httpx.Client(base_url=base, timeout=120) as c:
            for _ in range(per_client):
                name = local.choice(DISTRICT_NAMES)
                offset = local.randrange(len(by_district[name]) // 1000 + 1) * 1000
                params = {"district": name, "limit": 1000, "offset": offset}
                out.append(timed_get(c, "/devices", params)[0])
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


def bench_geojson(
    report: Report,
    client: httpx.Client,
    rng: random.Random,
    devices: Sequence[Device],
    scale: float,
) -> None:
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
            {"profile": "streetlight", "district": rng.choice(DISTRICT_NAMES), "limit": 100_000}
            for _ in range(int(10 * scale) + 1)
        ],
    )
    report.timings("GET /devices.geojson?profile=streetlight&district=D", geo_d)


def bench_history(
    report: Report,
    client: httpx.Client,
    rng: random.Random,
    devices: Sequence[Device],
    scale: float,
) -> None:
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
            seconds, response = timed_get(client, f"/devices/{device.device_id}/history", params)
            if n:
                hist.add(seconds, len(response.content))
        report.timings(label, hist)
