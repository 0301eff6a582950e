"""What the steps of the API benchmark share: names, addresses, thresholds."""

from __future__ import annotations

ROOT = "bench"
DATABASE = "citysense_bench"
HOST = "127.0.0.1"
WRITE_BATCH = 5_000  # lines per /write
LATEST_SPREAD_S = 60  # the newest reading of each device lies within this much before the load
STALENESS_S = 30.0  # the API's default: a changed aggregate cell is served up to this old
LATE_AFTER, SILENT_AFTER = 60.0, 120.0  # x reporting interval: streetlights late after 1 h
S = 1_000_000_000
