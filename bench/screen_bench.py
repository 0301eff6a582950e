"""The operations screen with a large city, measured in Debian's Chromium:

1. the first full render of the map: from sign-in until every device is drawn (the page's own
   marks), with the state of 100,000 devices fetched, clustered and drawn;
2. a redraw of the map at each zoom (pan and zoom stay smooth);
3. a live load of 1,000 readings/s on the state feed for 30 s: whether the page keeps up (each
   reading's age when the page handled it, at the end as at the start), its frame rate and its
   long tasks.

    .venv/bin/python -m bench.screen_bench [--devices 100000] [--rate 1000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.screen.browser import chromium, signed_in
from bench.screen.feed import FeedLoad
from bench.screen.measure import (
    FirstRender,
    LiveFigures,
    first_render,
    live_figures,
    redraws,
    start_live,
)
from bench.screen.stack import ROOT, stack
from simulators.city import city_rows, write_city


def report(
    first: list[FirstRender], draws: list[tuple[int, float, int]], live: LiveFigures
) -> None:
    print(f"\nfirst full render of the map, {first[0].devices:,} devices")
    print("  run | sign-in → state fetched | → clustered | → every device drawn | state bytes")
    for n, f in enumerate(first, start=1):
        print(
            f"  {n:>3} | {f.state_ms:>19,.0f} ms | {f.indexed_ms:>8,.0f} ms |"
            f" {f.drawn_ms:>16,.0f} ms | {f.state_bytes:,}"
        )
    print(
        "redraw of the map per zoom: "
        + ", ".join(f"z{z} {ms:.0f} ms ({n} marks)" for z, ms, n in draws)
    )
    print(f"live: {live.rate:,.0f} readings/s on the state feed for {live.seconds:.0f} s")
    print(f"  published {live.published:,}, handled by the page {live.received:,}")
    print(
        f"  age of a reading when handled: p50 {live.lag_p50_ms:,.0f} ms,"
        f" p99 {live.lag_p99_ms:,.0f} ms, max {live.lag_max_ms:,.0f} ms;"
        f" in the last second p99 {live.lag_last_second_p99_ms:,.0f} ms"
    )
    print(
        f"  {live.fps:.0f} frames/s; {live.long_tasks} long tasks, {live.long_task_ms:,.0f} ms in"
        f" all; stream resumed {live.resumes} times"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="readings/s")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=3, help="first renders timed (new tabs)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="citysense-screen-bench-") as tmp:
        registry = Path(tmp) / "registry.csv"
        with registry.open("w") as out:
            write_city(out, args.devices)
        devices = [(r["profile"], r["device_id"], r["district"]) for r in city_rows(args.devices)]
        with stack(registry) as run, chromium() as browser:
            print(f"{args.devices:,} devices; starting the API ...", flush=True)
            run.start_api()
            first = []
            for _ in range(args.runs):
                page = signed_in(browser, run.base, run.token)
                first.append(first_render(page, args.devices))
                page.context.close()
            page = signed_in(browser, run.base, run.token)
            first_render(page, args.devices)
            draws = redraws(page)
            url = run.servers.mosquitto.url("citysense-ingest")
            load = FeedLoad(url, f"{ROOT}/_ingested/bench", devices, args.rate, args.seconds)
            started = start_live(page)
            load.start()
            load.join()
            live = live_figures(page, args.rate, load.sent, started)
    report(first, draws, live)


if __name__ == "__main__":
    main()
