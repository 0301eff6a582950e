"""`citysense evaluate`: a simulated month of one district through the real pipeline — a broker
and an InfluxDB of its own, an ingest worker, the foresight signals computed from what was
stored — each signal scored against what the scenario injected.

    citysense evaluate                       # 28 days, 20 water nodes, 50 lamps, 20 meters
    citysense evaluate --days 15 --json      # shorter; one JSON object on stdout
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from api.core.contract import Contract
from api.foresight import store
from api.foresight.run import Foresight, Span, rule_threshold
from citysense import scoring
from citysense.servers import LocalServers
from common.influx import AsyncInfluxClient, InfluxClient, InfluxConfig
from common.mqtturl import MqttUrl
from device_profiles import DEFAULT_PROFILES, SignalName
from device_profiles.load import REGISTRY_COLUMNS
from ingest.settings import IngestSettings
from ingest.worker import Worker
from simulators.publish import publish
from simulators.scenario import Scenario, ScenarioSpec, write_profiles

PROG = "citysense evaluate"
ROOT = "city"
NS = 10**9


def add_arguments(parser: argparse.ArgumentParser) -> None:
    spec = ScenarioSpec()
    parser.add_argument("--days", type=int, default=spec.days, help="days simulated (28)")
    parser.add_argument("--water", type=int, default=spec.water, help="water nodes (20)")
    parser.add_argument("--lamps", type=int, default=spec.lamps, help="lamps (50)")
    parser.add_argument("--meters", type=int, default=spec.meters, help="meters (20)")
    parser.add_argument("--interval", type=int, default=spec.interval_s, help="seconds (900)")
    parser.add_argument("--seed", type=int, default=spec.seed)
    parser.add_argument("--truth-out", type=Path, help="write the injected ground truth here")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Where the scenario goes: the simulator's and ingest's MQTT URLs, the database."""

    simulator_url: str
    ingest_url: str
    influx: InfluxConfig
    topic_root: str


def main(args: argparse.Namespace) -> int:
    spec = ScenarioSpec(
        days=args.days, water=args.water, lamps=args.lamps, meters=args.meters,
        interval_s=args.interval, seed=args.seed,
    )  # fmt: skip
    try:
        spec.check()
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="citysense-evaluate-") as home:
        servers = LocalServers.create(Path(home) / "servers", root=ROOT)
        servers.start()
        try:
            influx = InfluxConfig(url=servers.influxdb.url, database="evaluate")
            pipeline = Pipeline(
                servers.mosquitto.url("citysense-simulator"),
                servers.mosquitto.url("citysense-ingest"),
                influx,
                ROOT,
            )
            report = evaluate(spec, pipeline, Path(home), progress=not args.json)
        finally:
            servers.stop()
    if args.truth_out is not None:
        args.truth_out.write_text(json.dumps(report["truth"], indent=2))
    del report["truth"]
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


def evaluate(
    spec: ScenarioSpec, pipeline: Pipeline, folder: Path, *, progress: bool = False
) -> dict[str, Any]:
    """Simulate, ingest, compute, store and score; the report (with the truth under `truth`)."""
    scenario = Scenario.build(spec)
    profiles_dir = write_profiles(DEFAULT_PROFILES, folder / "profiles", spec.interval_s)
    registry = folder / "registry.csv"
    with registry.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=REGISTRY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(scenario.registry_rows())
    settings = IngestSettings(
        _env_file=None,  # type: ignore[call-arg]
        mqtt_url=SecretStr(pipeline.ingest_url),
        influx_url=pipeline.influx.url,
        influx_db=pipeline.influx.database,
        topic_root=pipeline.topic_root,
        client_id=f"evaluate-{pipeline.topic_root.replace('/', '-')}",
        http_port=0,
        spool_dir=None,
        profiles=profiles_dir,
        registry=registry,
    )
    received_from = time.time_ns()
    ingest_s, stored = _ingest(scenario, settings, pipeline, progress)
    started = time.monotonic()
    report = asyncio.run(_signals(scenario, settings, pipeline.influx, received_from))
    report["pipeline"] = {
        "readings_stored": stored,
        "ingest_seconds": round(ingest_s, 1),
        "signals_seconds": round(time.monotonic() - started, 1),
    }
    return report


def _ingest(
    scenario: Scenario, settings: IngestSettings, pipeline: Pipeline, progress: bool
) -> tuple[float, int]:
    with InfluxClient(pipeline.influx) as client:
        client.create_database()
    profiles, registry = settings.load_contract()
    worker = Worker(settings, profiles, registry)
    worker.start()
    started = time.monotonic()
    try:
        _until(worker.consumer.subscribed.is_set, 30, "ingest's subscription")
        report = publish(
            MqttUrl.parse(pipeline.simulator_url),
            scenario.messages(settings.topics),
            progress=progress,
        )
        _until(lambda: worker.stats.messages_acked >= report.messages, 600, "ingest to store")
    finally:
        worker.stop()
    return time.monotonic() - started, worker.stats.readings_stored


def _until(done: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{PROG}: timed out waiting for {what}")
        time.sleep(0.1)


async def _signals(
    scenario: Scenario, settings: IngestSettings, influx: InfluxConfig, received_from: int
) -> dict[str, Any]:
    profiles, registry = settings.load_contract()
    contract = Contract.build(profiles, registry)
    holidays = frozenset(date.fromisoformat(d) for d in scenario.truth["holidays"])
    client = AsyncInfluxClient(influx)
    try:
        foresight = Foresight(contract, client, zone=scenario.spec.timezone, holidays=holidays)
        days = Span(scenario.start_ms * 10**6, scenario.end_ms * 10**6)
        result = await foresight.compute(days, days, Span(received_from, time.time_ns() + NS))
        lines = store.round_lines(result, days.end_ns)
        await client.write("\n".join(lines).encode())
    finally:
        await client.aclose()
    light = profiles["streetlight"]
    thresholds = {
        s.value: rule_threshold(light, s) or 0.0
        for s in (SignalName.LIT_BY_DAY, SignalName.DARK_BY_NIGHT, SignalName.POWER_WHILE_OFF,
                  SignalName.POWER_DRIFT)
    }  # fmt: skip
    truth = scenario.truth
    return {
        "scenario": {k: truth[k] for k in ("district", "start", "end", "days", "devices", "seed")},
        "leaks": scoring.leaks(result, truth),
        "lamps_burning_by_day": scoring.lamps_by_day(result, truth, thresholds["lit_by_day"]),
        "lamp_faults": scoring.lamp_faults(result, truth, thresholds),
        "forecast": scoring.forecasts(result),
        "quality": scoring.quality(result, truth),
        "stored_points": len(lines),
        "truth": truth,
    }
