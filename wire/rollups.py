"""Rollups: aggregates across devices kept as data, per (profile, district, grain, window).

The rollup keeper (api.compute.keeper, run as `citysense rollups`) writes them, the API's
/aggregates reads them (api.compute.aggregates); this is the layout both follow. One point per
profile (tag `profile`, the profile's measurement), district (tag `district`) and window of a
grain (tag `grain`: `15m`, `1h` or `day`), timestamped at the window's start, in the
`aggregates` retention policy (wire.retention), which keeps them as long as the readings they
come from.
Its fields, per field F of the profile, are what make every aggregate across devices exact by
combination (api.core.rollups): `F.n` devices that reported F, `F.sm`/`F.mnm`/`F.mxm` the
sum/min/max of the devices' means, `F.lo`/`F.hi` the min/max reading, `F.c` the readings,
`F.inc`/`F.incn` a counter's summed increases and the devices with one, `F.eq.<value>` the
devices whose last value in the window was <value> (state and boolean fields); and, for the
whole point, `sig_s`/`sig_n` (and `lsig_s`/`lsig_n` for counters, over the counter's lookback
too) the signature of the change marks (wire.changes) read before it was computed, and `at`
the wall clock (ns) then: the data it holds is as of `at`.

A window is always written whole, recomputed from the stored readings, never incremented: a
late or redelivered reading is counted once by construction.
"""

from __future__ import annotations

MEASUREMENT = "citysense_rollups"
# name -> width in seconds; `day` is a calendar day in the open-data time zone (23-25 h at a DST
# change), the others are fixed and epoch-aligned (so an hour in any zone whose offset is whole
# hours, e.g. Asia/Shanghai, is a `1h` window too).
GRAINS = {"15m": 900, "1h": 3600, "day": 86400}
