"""Benchmark only: `citysense ingest` held just before it connects to the broker, so that several
workers connect together.

    CITYSENSE_BENCH_GO=PATH python -m bench.ingest_gated ingest

bench.throughput's backlog mode starts its workers after the load is queued. Started at once,
they spent their start-up (imports, registry, InfluxDB checks) contending for the two cores and
connected up to 1.3 s apart; the first drained its share alone meanwhile. Held here, each has
done all of that when it creates PATH.<pid>; the benchmark then creates PATH, and each worker
connects within a few milliseconds of it. Without CITYSENSE_BENCH_GO it is plain ingest.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import ingest.consume
from citysense.cli import main

POLL_S = 0.002  # the skew between the workers' connects, at most


def hold_connect() -> None:
    go = os.environ.get("CITYSENSE_BENCH_GO")
    if not go:
        return
    connect = ingest.consume.Consumer.start

    def start(self: ingest.consume.Consumer) -> None:
        Path(f"{go}.{os.getpid()}").touch()
        while not os.path.exists(go):
            time.sleep(POLL_S)
        connect(self)

    ingest.consume.Consumer.start = start  # type: ignore[method-assign]


if __name__ == "__main__":
    hold_connect()
    sys.argv = ["citysense", *sys.argv[1:]]
    sys.exit(main())
