"""The latest rows (api.live.rows) built from the readings once, by the deployment's set-up
(`citysense schema`), rather than by the first start of every API replica.

Why: an API whose rows are not whole reads the newest point of every series, which costs
InfluxDB 1.6 its CPU per series and field (bench.api_memory: 8 s at 100,000 devices, 78 s at
1,000,000), and every replica starting meanwhile does the same. That happens once per database
whose readings no writer of this version stored: a database from a version before the rows, or
readings imported by other means. Built by the set-up (compose's one-shot `influxdb-init`, which
every API waits for), each replica's first start reads the rows instead.

The build is the API's own full load and rows' write (api.live.service.Live), in a process that
serves nothing: the newest owed mark read first, then the readings, then the rows, then the
point saying they are whole unless a writer stored readings without rows meanwhile (wire.latest).
Its rows go under a full load's writer tag of their own, which the point then names
(wire.latest): a start reads only the named full load's rows beside the writers', and the
API compacts them once ingest workers hold rows of the devices that report (api.live.compact).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from api.core.contract import Contract
from api.core.settings import ApiSettings
from api.live import rows
from api.live.service import Live
from common.influx import AsyncInfluxClient


@dataclass(frozen=True, slots=True)
class Built:
    needed: bool  # False: the rows were whole already, nothing was read
    devices: int  # devices with a reading within the lookback, each given a row
    whole: bool  # the rows are whole now (False: readings were stored without rows meanwhile)
    seconds: float


async def build_rows(
    settings: ApiSettings,
    contract: Contract,
    influx: AsyncInfluxClient,
    scrub: Callable[[str], str],
) -> Built:
    """The rows built from the readings if they are not whole; InfluxDB's errors are raised
    (common.errors.InfluxError), and the rows then stay for the API's full load to build."""
    clock = time.perf_counter()
    if await rows.complete(influx, settings.api_load_timeout):
        return Built(needed=False, devices=0, whole=True, seconds=0.0)
    # No data folder: a snapshot is an API replica's own, never the set-up's.
    headless = settings.model_copy(update={"api_data_dir": None})
    live = Live(headless, contract, influx, scrub)
    devices, whole = await live.rows_from_readings()
    return Built(needed=True, devices=devices, whole=whole, seconds=time.perf_counter() - clock)
