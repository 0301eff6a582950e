"""`citysense ingest`: run one ingest worker until SIGTERM or SIGINT, then drain and exit."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
from types import FrameType

import orjson
from pydantic import ValidationError

from common.errors import SpoolInUse
from common.influx import redacted
from common.logs import configure
from common.settings import settings_problems
from device_profiles import ContractError
from ingest.settings import IngestSettings
from ingest.supervise import supervise
from ingest.worker import Worker

log = logging.getLogger("citysense.ingest")

# The cyclic garbage collector's first generation, in tracked objects allocated (Python's default
# is 700). A worker keeps thousands of messages' objects alive between receiving and storing
# them, so at 700 the collector ran every ~70 messages and traversed them again and again: 13 of
# the pipeline's ~55 µs per message went to it (measured on the benchmark's load with the
# collector on and off). At 50,000 it runs every few thousand messages; ingest makes almost no
# reference cycles, so what waits for it is small, and what refcounting frees goes at once.
GC_FIRST_GENERATION = 50_000


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
    parser.add_argument(
        "--retire",
        action="store_true",
        help="take this client id out of its shared subscription for good: store what the broker "
        "queued for it, then end its session (scaling down; same --client-id and --share-group)",
    )
    parser.add_argument(
        "--retire-idle",
        type=float,
        default=5.0,
        help="with --retire: seconds without a message that mean the queue is delivered",
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
    try:
        worker = Worker(settings, profiles, registry, retire=args.retire)
    except SpoolInUse as exc:
        log.error("refusing to start: %s", exc)
        return 2
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
        redacted(settings.influx_url),
        settings.influx_db,
    )
    # What start-up loaded (profiles, registry, modules) lives as long as the process: out of
    # the collector's sight, so that no collection traverses it again.
    gc.freeze()
    gc.set_threshold(GC_FIRST_GENERATION, 20, 10)
    worker.start()
    if args.retire:
        return _retire(worker, stop, args.retire_idle)
    while not stop.wait(0.5):
        if not worker.check():
            log.error("a thread of the worker died (logged above); draining and exiting")
            break
    clean = worker.stop()
    log.info(
        "stopped %s: %s",
        "cleanly" if clean else "with messages left to the broker",
        orjson.dumps(worker.stats.snapshot()).decode(),
    )
    return 0 if clean and not worker.crashed.is_set() else 1


def _retire(worker: Worker, stop: threading.Event, idle: float) -> int:
    client_id = worker.settings.client_id
    log.info("retiring %s: storing what the broker queued for it", client_id)
    while not stop.wait(0.5):
        if not worker.check():
            worker.stop()
            log.error("retiring %s: a thread died (logged above); its session is kept", client_id)
            return 1
        if worker.drained(idle):
            break
    if stop.is_set():
        worker.stop()
        log.warning("retiring %s interrupted; its session is kept, run --retire again", client_id)
        return 1
    clean = worker.stop(end_session=True)
    stats = worker.stats.snapshot()
    if not clean:
        log.error("retiring %s: the drain did not finish; its session is kept", client_id)
        return 1
    log.info(
        "retired %s: %s messages stored from its queue, session ended",
        client_id,
        stats.get("messages_acked", 0),
    )
    return 0
