"""`citysense rollups`: the rollup keeper (api.compute.keeper) in a process of its own.

Its rounds read InfluxDB's answers, parse them and compute every window in Python: in the API's
process that work held the event loop and the GIL, and the API's answers waited for it. Here it
shares nothing with the API but InfluxDB: the same keeper code, settings (CITYSENSE_API_*) and
InfluxDB client, and the rollups it writes, which every API replica serves.

Supervised like an ingest worker: /metrics (Prometheus), /live and /ready on
CITYSENSE_API_ROLLUPS_HOST:PORT (default 127.0.0.1:9102), answered from a thread of their own so a
long round never delays a probe. /live is 200 while the rounds' task runs; /ready once a whole
round ended (the backfill: every window of the readings has a rollup) and the last round did not
fail. If the rounds' task dies of anything but InfluxDB (whose failures are retried each round),
the process stops and exits 1 for its supervisor (compose, `citysense up`) to restart it; nothing
is lost, since a restarted keeper computes again whatever window has no current rollup. SIGTERM
or SIGINT: it stops at once (a window is written whole or not at all) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import ValidationError

from api.compute.keeper import RollupKeeper
from api.core.contract import Contract
from api.core.settings import ApiSettings
from api.core.supervise import Supervisor
from common import observe
from common.errors import ConfigError
from common.influx import AsyncInfluxClient, redacted
from common.logs import configure
from common.observe import PROMETHEUS_TEXT, Answer
from common.settings import settings_problems

log = logging.getLogger("citysense.rollups")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", help="address of /metrics, /live, /ready (default CITYSENSE_API_ROLLUPS_HOST)"
    )
    parser.add_argument(
        "--port", type=int, help="their port, 0 for none (default CITYSENSE_API_ROLLUPS_PORT)"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="log level (default info)",
    )


def main(args: argparse.Namespace) -> int:
    """Keep rollups until SIGTERM/SIGINT (0), the rounds' task dies (1), or bad settings (2).
    An invalid contract raises ContractError, which `citysense` reports (2)."""
    overrides = {
        name: value
        for name, value in (("api_rollups_host", args.host), ("api_rollups_port", args.port))
        if value is not None
    }
    try:
        settings = ApiSettings(**overrides)
    except ValidationError as exc:
        print(f"citysense rollups: invalid settings:\n{settings_problems(exc)}", file=sys.stderr)
        return 2
    configure(args.log_level.upper())
    if settings.api_rollups_nice:
        os.nice(settings.api_rollups_nice)
    profiles, registry = settings.load_contract()
    return asyncio.run(keep(settings, Contract.build(profiles, registry)))


async def keep(settings: ApiSettings, contract: Contract) -> int:
    """The keeper's rounds and its HTTP surface until stopped; the exit status."""
    stop = asyncio.Event()
    failed = False

    def on_failure() -> None:
        nonlocal failed
        failed = True
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    influx = AsyncInfluxClient(settings.influx)
    supervisor = Supervisor(on_failure)
    keeper = RollupKeeper(
        settings=settings, contract=contract, influx=influx, supervisor=supervisor
    )
    server = None
    if settings.api_rollups_port:
        server = ObserveServer(settings.api_rollups_host, settings.api_rollups_port, keeper)
    log.info(
        "keeping rollups of %d profiles; InfluxDB %s, database %s",
        len(contract.profiles),
        redacted(settings.influx_url),
        settings.influx_db,
    )
    keeper.start(always=True)
    if server is not None:
        server.start()
    try:
        await stop.wait()
    finally:
        if server is not None:
            server.stop()
        await keeper.stop()
        await influx.aclose()
    if failed:
        log.error("the rollup keeper died (logged above); exiting for a restart")
        return 1
    log.info("stopped")
    return 0


class KeeperCollector(Collector):
    """The keeper's progress, read at scrape time."""

    def __init__(self, keeper: RollupKeeper) -> None:
        self._keeper = keeper

    def collect(self) -> Iterator[Metric]:
        p = self._keeper.progress
        gauges = {
            "ready": (
                "1 once a whole round ended: every window of the readings has a rollup",
                p.ready,
            ),
            "running": ("1 while the keeper's rounds run", self._keeper.running),
            "failing": ("1 if the last round failed (InfluxDB)", p.failing),
            "units_pending": (
                "Units (district, day) found to compute, not yet computed",
                p.pending,
            ),
            "backfill_seconds": ("Seconds the first whole round took (the backfill)", p.backfill_s),
            "last_round_seconds": ("Seconds the last whole round took", p.round_s),
            "last_round_end_timestamp_seconds": ("When the last whole round ended", p.round_ended),
        }
        for name, (text, value) in gauges.items():
            yield GaugeMetricFamily(f"citysense_rollups_{name}", text, value=float(value))
        counters = {
            "rounds": ("Rounds run (every profile and grain)", p.rounds),
            "round_failures": ("Rounds InfluxDB failed, retried at the next", p.failures),
            "windows_computed": ("Rollups (district, grain, window) written", p.computed),
        }
        for name, (text, value) in counters.items():
            yield CounterMetricFamily(f"citysense_rollups_{name}", text, value=float(value))


class ObserveServer(observe.ObserveServer):
    """/metrics, /live and /ready from a daemon thread: a probe is answered while a round runs."""

    def __init__(self, host: str, port: int, keeper: RollupKeeper) -> None:
        registry = CollectorRegistry()
        registry.register(KeeperCollector(keeper))

        def live() -> Answer:
            # A dead task ends the process; this says so even before it has.
            if keeper.running:
                return 200, "live\n", PROMETHEUS_TEXT
            return 503, "not live\n", PROMETHEUS_TEXT

        def ready() -> Answer:
            p = keeper.progress
            if keeper.running and p.ready and not p.failing:
                return 200, "ready\n", PROMETHEUS_TEXT
            return 503, "not ready\n", PROMETHEUS_TEXT

        routes: dict[str, Callable[[], Answer]] = {
            "/metrics": lambda: (200, generate_latest(registry), PROMETHEUS_TEXT),
            "/live": live,
            "/ready": ready,
        }
        try:
            super().__init__(
                host,
                port,
                routes,
                thread_name="citysense-rollups-http",
                log=log,
                # Every answer here says the Prometheus text type, a 404 too, as it always has:
                # what probes and scrapers see does not change with the shared server.
                not_found=(404, "not found\n", PROMETHEUS_TEXT),
            )
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from exc
