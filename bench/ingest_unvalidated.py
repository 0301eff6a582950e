"""Benchmark only: an ingest worker with validation replaced by a bare pass-through.

`bench.throughput --validation` runs this next to the real worker on the same load, so the cost
of validating (types, ranges, states, timestamps, sentinels, duplicates) shows as a ratio. The
pass-through keeps what any ingest must do — take the timestamp, keep the profile's fields — and
checks nothing; the benchmark also sets CITYSENSE_DEDUPE_WINDOW=0 for it. Never a production
mode: it exists only in bench/.
"""

from __future__ import annotations

import sys
from typing import Any

import ingest.pipeline
from bench.ingest_gated import hold_connect
from citysense.cli import main
from ingest.stages import Reading
from ingest.validate import CompiledProfile, Invalid, parse_timestamp


def passthrough(
    compiled: CompiledProfile, device_id: str, obj: dict[str, Any], received_ns: int
) -> Reading | Invalid:
    raw = obj.get(compiled.ts_field)
    time_ns = parse_timestamp(raw) if raw is not None else received_ns
    fields = {k: v for k, v in obj.items() if k in compiled.checkers}
    return Reading(compiled.profile.profile, device_id, time_ns, fields)


if __name__ == "__main__":
    hold_connect()  # when the benchmark asks for it
    ingest.pipeline.validate = passthrough  # type: ignore[attr-defined]
    sys.argv = ["citysense", "ingest"]
    sys.exit(main())
