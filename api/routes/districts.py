"""Districts: what the registry holds per district, and a live summary of one district
(api.compute.districts)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.compute.districts import districts, summary
from api.deps import ContractDep, InfluxDep, PrincipalDep, SettingsDep
from api.errors import documented
from api.schemas import DistrictListPublic, DistrictSummaryPublic

router = APIRouter(prefix="/districts", tags=["districts"])

SUMMARY_DOC = """Per profile: devices registered in the district, devices reporting, and the
profile's `summary` figures.

- **Window**: readings stamped at or after `now - window` count (a device clock a little ahead,
  within what ingest accepts, still counts). `window` is at least 1s and at most the API's
  latest-value lookback.
- **Reporting**: a registered device of the district with at least one reading in the window.
  Readings are matched by their `district` tag, and only devices the registry puts in this
  district count.
- **Figures** look at each reporting device's *latest* reading in the window, one value per device:
  a device whose latest reading lacks the field contributes nothing to that figure (older
  readings are not used to fill it in). sum, mean, min and max use numeric values only and are
  `null` when no device contributed; count is the number of devices whose value equals `equals`
  (type-strict), or that have the field when `equals` is absent, and is never null. `devices` on a
  figure is how many devices' values it was computed over.
"""


@router.get(
    "",
    summary="Districts of the registry with device counts per profile",
    description="Registered devices per district and profile. Counts of installed devices "
    "identify no one, so every token may read them; a department token sees only its own "
    "districts and profiles.",
    responses=documented(401),
)
async def list_districts(contract: ContractDep, principal: PrincipalDep) -> DistrictListPublic:
    return districts(contract, principal)


@router.get(
    "/{district}/summary",
    summary="Live summary of one district",
    description=SUMMARY_DOC,
    responses=documented(401, 403, 404, 502, 503),
)
async def district_summary(
    *,
    principal: PrincipalDep,
    district: Annotated[str, Path(description="District name from the registry")],
    contract: ContractDep,
    influx: InfluxDep,
    settings: SettingsDep,
    window: Annotated[
        str, Query(description="How far back a reading counts, e.g. 15m, 1h", examples=["1h"])
    ] = "1h",
) -> DistrictSummaryPublic:
    return await summary(
        district, window, principal=principal, contract=contract, influx=influx, settings=settings
    )
