"""Districts: devices registered per district and profile, and a district's live summary
(each profile's figures over its devices' latest readings in a window)."""

from __future__ import annotations

import asyncio

from api.compute.summary import figure
from api.core import query as q
from api.core.access import check_filters
from api.core.contract import Contract
from api.core.errors import NotFound, invalid_query
from api.core.readings import Reading, readings_by_device
from api.core.settings import ApiSettings
from api.core.times import NS_PER_S, format_rfc3339, now_ns, parse_whole_seconds
from api.core.tokens import Principal
from api.schemas import (
    DistrictListPublic,
    DistrictPublic,
    DistrictSummaryPublic,
    FigurePublic,
    ProfileSummaryPublic,
)
from common.influx import AsyncInfluxClient
from device_profiles import Device, Profile, SummaryOp


def districts(contract: Contract, principal: Principal) -> DistrictListPublic:
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


async def summary(
    district: str,
    window: str,
    *,
    principal: Principal,
    contract: Contract,
    influx: AsyncInfluxClient,
    settings: ApiSettings,
) -> DistrictSummaryPublic:
    if district not in contract.districts:
        raise NotFound(f"unknown district {district!r}: not in the device registry")
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
