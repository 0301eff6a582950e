"""Districts: what the registry holds per district, and a live summary of one district."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query

from api.compute.summary import figure
from api.core import query as q
from api.core.access import check_filters
from api.core.readings import Reading, readings_by_device
from api.core.times import NS_PER_S, format_rfc3339, now_ns, parse_whole_seconds
from api.deps import ContractDep, InfluxDep, PrincipalDep, SettingsDep
from api.errors import documented, invalid_query
from api.schemas import (
    DistrictListPublic,
    DistrictPublic,
    DistrictSummaryPublic,
    FigurePublic,
    ProfileSummaryPublic,
)
from common.influx import AsyncInfluxClient
from device_profiles import Device, Profile, SummaryOp

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
    profiles = [p for p in sorted(contract.profiles) if principal.sees_profile(p)]
    items = []
    for district in contract.districts:
        if not principal.sees_district(district):
            continue
        counts = {p: len(contract.devices(p, district)) for p in profiles}
        items.append(
            DistrictPublic(district=district, devices=sum(counts.values()), profiles=counts)
        )
    return DistrictListPublic(items=items)


async def _profile_summary(
    influx: AsyncInfluxClient,
    profile: Profile,
    district: str,
    devices: list[Device],
    since_ns: int,
) -> ProfileSummaryPublic:
    latest: dict[str, Reading] = {}
    if devices:
        found = readings_by_device(
            profile,
            await q.fetch(influx, q.latest_readings(profile, since_ns, district=district)),
        )
        # A reading tagged with this district from a device the registry now places elsewhere
        # (or no longer knows) is not this district's device.
        latest = {d.device_id: found[d.device_id] for d in devices if d.device_id in found}
    figures = []
    for spec in profile.summary:
        result = figure(spec, latest.values())
        unit = None if spec.op is SummaryOp.COUNT else profile.fields[spec.field].unit
        figures.append(
            FigurePublic(
                name=spec.name,
                op=spec.op,
                field=spec.field,
                equals=spec.equals,
                unit=unit,
                value=result.value,
                devices=result.devices,
            )
        )
    return ProfileSummaryPublic(
        profile=profile.profile,
        devices_registered=len(devices),
        devices_reporting=len(latest),
        figures=figures,
    )


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
    if district not in contract.districts:
        raise HTTPException(404, f"unknown district {district!r}: not in the device registry")
    check_filters(principal, None, district)
    try:
        window_s = parse_whole_seconds(window, minimum=1, maximum=int(settings.api_latest_lookback))
    except ValueError as exc:
        raise invalid_query("window", window, str(exc)) from exc
    end_ns = now_ns()
    since_ns = end_ns - window_s * NS_PER_S
    summaries = await asyncio.gather(
        *(
            _profile_summary(
                influx,
                contract.profiles[name],
                district,
                list(contract.devices(name, district)),
                since_ns,
            )
            for name in sorted(contract.profiles)
            if principal.sees_profile(name)
        )
    )
    return DistrictSummaryPublic(
        district=district,
        window_seconds=window_s,
        start=format_rfc3339(since_ns),
        end=format_rfc3339(end_ns),
        profiles=list(summaries),
    )
