"""Changes: the marks a write carries so that readers know which windows it touched.

The layout is the contract's (device_profiles.changes); this module only encodes it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from device_profiles.changes import MEASUREMENT, STAMP_BITS, window_of
from ingest.encode import line
from ingest.stages import Enriched

Change = tuple[str, str, int]  # measurement, district, window start (ns)


def changes_of(readings: Iterable[Enriched]) -> set[Change]:
    return {(r.measurement, r.district, window_of(r.time_ns)) for r in readings}


def change_lines(changes: Iterable[Change]) -> list[str]:
    """One mark per window, all with one fresh stamp: the stamp of this write."""
    stamp = random.getrandbits(STAMP_BITS)
    return [
        line(MEASUREMENT, {"profile": m, "district": d}, {"stamp": stamp}, window)
        for m, d, window in sorted(changes)
    ]


def is_change(line_text: str) -> bool:
    return line_text.startswith(MEASUREMENT + ",")
