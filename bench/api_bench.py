"""The city-brain API at city scale: a benchmark, not a test (issue 5).

    .venv/bin/python -m bench.api_bench                      # 100,000 devices, ~5-10 minutes
    .venv/bin/python -m bench.api_bench --devices 20000 --quick

Starts its own Mosquitto and InfluxDB (temporary folder, free ports) and, step by step:
1. writes a registry of `--devices` devices over 6 districts (simulators.city: 60 % streetlights,
   20 % water-pipe nodes, 20 % power meters);
2. loads `--hours` of history straight into InfluxDB as line protocol (not through MQTT): every
   device gets one reading every `--history-every` seconds, the newest within a minute of the
   load, values from the simulators' device models (lamps follow dusk and dawn, counters grow);
3. starts the API as its own process (`citysense api`, authentication off) and times its start
   until it serves with its latest-state cache rebuilt from InfluxDB; with --rollups (the
   default) the rollup keeper runs beside it as a deployment runs it (`citysense rollups`, a
   process of its own, api.keeper_cli), and the benchmark waits until its backfill over the
   loaded history is done, and reports its time and memory;
4. times requests from one client (and one concurrent run): a district's latest state paged at
   the maximum page size, one device, the GeoJSON of every streetlight, aggregations across
   devices over 24 h (gauges per district per hour / 15 min, lamps on, energy per district per
   day) — each asked first once, then again (kept cells, api.cells); with --warm (the default)
   the API was told to keep these questions warm and the first ask comes after its warm-up —
   and a device's 24 h history; with --restart (the default) the API is then stopped, started
   again, and each aggregate asked again (its first ask on an API that kept nothing in memory;
   the keeper runs on); with --boundary S, the API is restarted once more just before a
   quarter-hour begins and each aggregate first asked S seconds after it began (the current
   window began since the keeper's last round); with --boundary-live R, while an ingest worker
   stores R live readings/s (the keeper computes the quarter that ended again meanwhile);
5. opens `--sse-clients` Server-Sent-Events streams, starts an ingest worker and publishes live
   readings over MQTT at `--sse-rate` readings/s for `--sse-seconds`, and measures delivery:
   latency from the reading's timestamp (the moment it was published) to its event arriving at
   each client, and whether every client got every event; then asks the aggregates again,
   after live ingest touched their current windows;
6. prints a table of all figures and stops everything it started.

Reporting status thresholds are widened for the API (CITYSENSE_API_LATE_AFTER/SILENT_AFTER) so
no device of the loaded city turns late or silent during the run: the history has no live
readings behind it, and 60,000 lamps going silent at once mid-measurement would be a different
benchmark. Everything runs on this one machine; the figures include the clients' own CPU.

This module is the command line; the steps are in the package bench.api, a module each.
"""

from __future__ import annotations

import argparse
import os

from bench.api.run import run


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--hours", type=float, default=24.0, help="history to load")
    parser.add_argument(
        "--history-every", type=int, default=3600, help="seconds between loaded readings"
    )
    parser.add_argument("--loaders", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiplies the number of requests"
    )
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--sse-clients", type=int, default=100)
    parser.add_argument(
        "--sse-rate",
        type=float,
        nargs="+",
        default=[100.0, 1000.0],
        help="readings/s published (one SSE run per rate)",
    )
    parser.add_argument("--sse-seconds", type=float, default=30.0)
    parser.add_argument("--sse-devices", type=int, default=1000, help="devices publishing")
    parser.add_argument(
        "--sse-filtered", action="store_true", help="half the clients filter one district"
    )
    parser.add_argument("--quick", action="store_true", help="fewer requests and a shorter SSE run")
    parser.add_argument("--skip-sse", action="store_true")
    _add_api_arguments(parser)
    parser.add_argument("--skip-requests", action="store_true")
    parser.add_argument(
        "--api-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra CITYSENSE_* setting for the API process",
    )
    args = parser.parse_args()
    if args.quick:
        args.scale = min(args.scale, 0.3)
        args.sse_seconds = min(args.sse_seconds, 10.0)
    return args


def _add_api_arguments(parser: argparse.ArgumentParser) -> None:
    """What the API runs with (warming, the rollup keeper) and the restarts asked after."""
    parser.add_argument(
        "--warm",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the API keeps the aggregates asked here warm (--no-warm: first asks compute)",
    )
    parser.add_argument(
        "--rollups",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the rollup keeper (`citysense rollups`, its own process, with --api-env "
        "too); the benchmark waits for its backfill before asking, and reports how long it took",
    )
    parser.add_argument(
        "--restart",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after step 4, restart the API and ask the aggregates again",
    )
    parser.add_argument(
        "--boundary",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="after the restarts, restart the API just before a quarter-hour begins and ask "
        "every aggregate first this many seconds after it began (0: not)",
    )
    parser.add_argument(
        "--boundary-live",
        type=float,
        default=0.0,
        metavar="RATE",
        help="with --boundary: an ingest worker stores live readings of 1,000 devices across "
        "every district, published at this many readings/s from 150 s before the quarter-hour "
        "until the asks are done, so that the quarter that ends has moved and the keeper's "
        "round after it computes it again, as in a live city (0: no live readings)",
    )


def main() -> None:
    run(parse_args())


if __name__ == "__main__":
    main()
