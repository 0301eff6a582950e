"""`citysense ingest`: run one ingest worker until SIGTERM or SIGINT, then drain and exit."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

import orjson
from pydantic import ValidationError

from citysense.logs import configure
from citysense.settings import settings_problems
from device_profiles import ContractError
from ingest.settings import IngestSettings
from ingest.supervise import supervise
from ingest.worker import Worker

log = logging.getLogger("citysense.ingest")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--client-id", help="MQTT client id (CITYSENSE_CLIENT_ID)")
    parser.add_argument("--share-group", help="shared-subscription group (CITYSENSE_SHARE_GROUP)")
    parser.add_argument("--http-port", type=int, help="metrics/readiness port, 0 for none")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="run N workers on a shared subscription, restarting any that die",
    )


def main(args: argparse.Namespace) -> int:
    overrides = {
        k: v
        for k, v in {
            "client_id": args.client_id,
            "share_group": args.share_group,
            "http_port": args.http_port,
        }.items()
        if v is not None
    }
    try:
        settings = IngestSettings(**overrides)
    except ValidationError as exc:
        print(f"citysense ingest: invalid settings:\n{settings_problems(exc)}", file=sys.stderr)
        return 2
    configure(settings.log_level)
    if args.workers > 1:
        group = settings.share_group or "citysense"
        return supervise(args.workers, settings.client_id, group, settings.http_port)
    try:
        profiles, registry = settings.load_contract()
    except ContractError as exc:
        log.error("refusing to start: invalid device profiles or registry:\n%s", exc)
        return 2
    worker = Worker(settings, profiles, registry)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; draining", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "starting: %d profiles, %d devices, broker %s, InfluxDB %s db %s",
        len(profiles),
        len(registry.devices),
        settings.mqtt.redacted(),
        settings.influx_url,
        settings.influx_db,
    )
    worker.start()
    stop.wait()
    clean = worker.stop()
    log.info(
        "stopped %s: %s",
        "cleanly" if clean else "with messages left to the broker",
        orjson.dumps(worker.stats.snapshot()).decode(),
    )
    return 0 if clean else 1
