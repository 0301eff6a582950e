"""The SensorThings API at city scale, against the native API answering the same questions in
the same run (issue 13): a benchmark, not a test.

    .venv/bin/python -m bench.sta_bench                     # 100,000 devices, a few minutes
    .venv/bin/python -m bench.sta_bench --devices 20000

On servers of its own (temporary folder, free ports), with bench.api's steps: a registry of
`--devices` devices and `--hours` of history loaded into InfluxDB, the API started as its own
process (authentication off); then, alternating STA and native request by request so both see
the same machine:
- a page of 100 Things with `$expand=Locations,Datastreams` (each Datastream's phenomenonTime
  read from InfluxDB) against `GET /devices?limit=100` at the same offset;
- one day of one Datastream's Observations (`phenomenonTime` bounds pushed down to InfluxQL)
  against `GET /devices/{id}/history` of that field over the same day, one value per stored
  reading's interval.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench.api.constants import ROOT
from bench.api.figures import Report, Timings, machine
from bench.api.processes import Stack, start_api
from bench.api.run import setup
from bench.api.timing import Failed, timed_get
from citysense.children import Children
from citysense.servers import LocalServers
from device_profiles import DEFAULT_PROFILES, Device, load_profiles

STA = "/sta/v1.1"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--hours", type=float, default=24.0, help="history to load")
    parser.add_argument("--history-every", type=int, default=3600, help="seconds between readings")
    parser.add_argument("--loaders", type=int, default=2)
    parser.add_argument("--requests", type=int, default=100, help="of each kind")
    return parser.parse_args()


def timed(client: httpx.Client, into: Timings, path: str, params: dict[str, str]) -> None:
    try:
        seconds, response = timed_get(client, path, params)
    except (Failed, httpx.TimeoutException) as exc:
        into.errors.append(str(exc)[:160])
        return
    into.add(seconds, len(response.content))


def bench_pages(report: Report, client: httpx.Client, devices: int, n: int) -> None:
    rng = random.Random(13)
    sta, native = Timings(), Timings()
    expand = {"$top": "100", "$expand": "Locations,Datastreams"}
    for _ in range(n):
        offset = str(rng.randrange(0, max(1, devices - 100)))
        timed(client, sta, f"{STA}/Things", {**expand, "$skip": offset})
        timed(client, native, "/devices", {"limit": "100", "offset": offset})
    report.section("A page of 100 devices")
    report.timings("STA: Things?$top=100&$expand=Locations,Datastreams", sta)
    report.timings("native: /devices?limit=100", native)


def bench_day(
    report: Report, client: httpx.Client, devices: list[Device], every_s: int, n: int
) -> None:
    rng = random.Random(17)
    profiles = load_profiles(DEFAULT_PROFILES)
    sta, native = Timings(), Timings()
    newest = datetime.now(UTC).replace(microsecond=0)
    end, start = (f"{t.isoformat()[:19]}Z" for t in (newest, newest - timedelta(days=1)))
    for _ in range(n):
        device = rng.choice(devices)
        field = next(iter(profiles[device.profile].fields))
        ds = f"{STA}/Datastreams('{device.device_id}:{field}')/Observations"
        window = f"phenomenonTime ge {start} and phenomenonTime le {end}"
        timed(client, sta, ds, {"$filter": window, "$top": "1000"})
        # `last` per reading interval: every stored value of the day, as the STA answer has.
        params = {"field": field, "agg": "last", "every": f"{every_s}s", "start": start, "end": end}
        timed(client, native, f"/devices/{device.device_id}/history", params)
    report.section("One day of one field of one device")
    report.timings("STA: Datastreams(id)/Observations, a day", sta)
    report.timings("native: /devices/{id}/history, the same day", native)


def main() -> None:
    args = parse_args()
    args.skip_requests = False
    report, children = Report(), Children()
    print(f"machine: {machine()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="citysense-sta-bench-") as tmp:
        home = Path(tmp)
        servers = LocalServers.create(home / "servers", root=ROOT)
        servers.start()
        try:
            registry, devices = setup(report, servers, home, args)
            api = start_api(Stack(report, servers, children, home, registry), {})
            with httpx.Client(base_url=api.base, timeout=120) as client:
                bench_pages(report, client, len(devices), args.requests)
                bench_day(report, client, devices, args.history_every, args.requests)
        finally:
            children.stop_all()
            servers.stop()
    report.print()


if __name__ == "__main__":
    main()
