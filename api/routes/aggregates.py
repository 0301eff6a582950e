"""GET /aggregates: aggregation across devices per district and window (api.compute.aggregates).
The one route open-data tokens may use."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.compute.aggregates import AggregateRequest, answer
from api.deps import ContractDep, InfluxDep, PrincipalDep, RuntimeDep, SettingsDep
from api.errors import documented
from api.schemas import AggregatePublic, AggregateQuery

router = APIRouter(tags=["aggregates"])
# "<computed>/<cells>": how many of the answer's (window, group) cells InfluxDB had to compute.
CELLS_HEADER = "CitySense-Cells-Computed"
# How many of the answer's cells were served from the rollups kept in InfluxDB (api.compute.keeper).
ROLLUPS_HEADER = "CitySense-Cells-Rollups"
# Where the answer's time went (api.core.phases); api.observe adds the whole request's, "app".
TIMING_HEADER = "Server-Timing"

DOC = """`agg` of `field` over the devices of `profile`, per window of `every` (as in device
history: a width, or hour/day/week/month in `tz`) and per district (`group_by=district`) or over
the whole city (`group_by=none`). Groups follow the `district` tag stored with each reading
(read from InfluxDB at most once a minute; a district ingest or replay writes into is in the
change marks every answer reads, so it shows at once).

- mean, min, max: over each device's mean / min / max in the window, so a device that reports
  more often does not weigh more; sum: the sum of the devices' means (total power); count:
  readings; first/last: the earliest/latest reading; spread: between the devices' means.
- Counters (delta, rate): each device's increase in the window, resets counted from 0, summed
  over the group (energy per district per day: `agg=delta&every=day`).
- `equals` (state and boolean fields, with agg=count): devices whose last value in the window
  equals it, e.g. lamps on after dusk: `field=powerState&equals=on&every=15m`; `registered`
  beside it is the lamps expected (registered in the district).
- `devices`: how many devices contributed (with `equals`: how many reported in the window, the
  lamps judged on or off); `registered`: how many the registry has in the group.

Each (window, group) cell is computed once and kept until a write touches its windows; the
window still filling is served up to `CITYSENSE_API_AGGREGATE_MAX_STALENESS` (30 s) old. Without
`start`/`end` the answer covers whole windows: from the start of the window holding 24 h ago to
the end of the current one. The header `CitySense-Cells-Computed: <computed>/<cells>` says how
many cells InfluxDB computed from the readings for this answer, and `Server-Timing` where its
time went (milliseconds per phase, and `app` for the whole request).

Rollups: where the rollup keeper runs (`citysense rollups`, a process beside the API), every
district's aggregates per 15 minutes, hour and day (in the open-data time zone) are kept as data
in InfluxDB, so a question on those windows (any aggregate but first/last; `equals` on state and
boolean fields) is answered from them even on its first ask, after a restart, on any replica:
`CitySense-Cells-Rollups` says how many cells were. A rollup whose window's data changed since it
was computed is served under the same max-staleness rule, else computed from the readings.

**Open data** (tokens of scope open_data) sees only this route, under rules that keep any one
device from being singled out, even by combining several answers:
1. groups are districts only (no city-wide total, no bounding box or device filter), so two
   answers never overlap partly: each cell is a whole district;
2. one fixed calendar grid: whole days in the operator's time zone (`every=day`, `tz` as
   configured), only days that are over, and `start`/`end` are widened to whole days, so no two
   windows overlap partly either (no differencing 00:00-12:00 against 00:00-13:00);
3. a cell to which fewer than `min_devices` devices contributed is suppressed (value and
   `devices` null). Together: every published number is a whole (district, day) cell over at
   least k devices, identical however it is asked for, so no difference of answers isolates a
   device. What remains: readings arriving late (up to the profile's max_age) change a past day,
   and min/max publish one (unnamed) device's value, as any k-anonymous table does."""


@router.get(
    "/aggregates",
    summary="Aggregates across devices, per district and window",
    description=DOC,
    responses={
        200: {
            "description": "The rows, per window and group",
            "headers": {
                CELLS_HEADER: {
                    "description": "<computed>/<cells>: cells InfluxDB computed for this answer",
                    "schema": {"type": "string", "pattern": r"^\d+/\d+$"},
                },
                ROLLUPS_HEADER: {
                    "description": "cells served from the rollups kept in InfluxDB",
                    "schema": {"type": "string", "pattern": r"^\d+$"},
                },
                TIMING_HEADER: {
                    "description": "milliseconds per phase: marks (change marks read), "
                    "districts (stored district tags, read at most every minute), kept (cells "
                    "checked against the marks), rollups, readings (cells computed), rows; "
                    "app: the whole request",
                    "schema": {"type": "string"},
                },
            },
        },
        **documented(401, 403, 502, 503),
    },
)
async def aggregates(
    *,
    params: Annotated[AggregateQuery, Query()],
    principal: PrincipalDep,
    contract: ContractDep,
    influx: InfluxDep,
    settings: SettingsDep,
    runtime: RuntimeDep,
    response: Response,
) -> AggregatePublic:
    request = AggregateRequest(**params.model_dump())
    answered = await answer(
        request,
        principal=principal,
        contract=contract,
        influx=influx,
        settings=settings,
        cache=runtime.cells,
    )
    response.headers[CELLS_HEADER] = answered.computed
    response.headers[ROLLUPS_HEADER] = str(answered.rolled)
    response.headers[TIMING_HEADER] = answered.phases.header()
    runtime.warmer.note(request, principal)
    return answered.body
