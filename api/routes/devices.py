"""Devices: registry metadata joined with the latest reading, and one field's history."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query

from api import query as q
from api.access import check_device, check_filters
from api.contract import Contract
from api.deps import ContractDep, InfluxDep, PrincipalDep, SettingsDep
from api.errors import documented, invalid_query
from api.readings import Reading, aggregate_value, first_reading, readings_by_device
from api.schemas import (
    BucketPublic,
    DeviceListPublic,
    DevicePublic,
    HistoryPublic,
    ReadingPublic,
)
from api.settings import ApiSettings
from api.times import (
    NS_PER_S,
    bucket_count,
    format_rfc3339,
    now_ns,
    parse_rfc3339,
    parse_whole_seconds,
)
from citysense.influx import AsyncInfluxClient
from device_profiles import Device, Profile

router = APIRouter(prefix="/devices", tags=["devices"])

PAGE_MAX = 1000  # one page is one InfluxDB query per profile, with one bound id per device
DEFAULT_HISTORY_S = 86400

DeviceId = Annotated[str, Path(description="Device id from the registry", examples=["SL-000001"])]


def device_public(device: Device, reading: Reading | None) -> DevicePublic:
    return DevicePublic(
        device_id=device.device_id,
        profile=device.profile,
        district=device.district,
        latitude=device.latitude,
        longitude=device.longitude,
        address=device.address,
        reading=None
        if reading is None
        else ReadingPublic(time=format_rfc3339(reading.time_ns), values=reading.values),
    )


def registered(contract: Contract, device_id: str) -> Device:
    device = contract.device(device_id)
    if device is None:
        raise HTTPException(404, f"unknown device {device_id!r}: not in the device registry")
    return device


def check_choice(name: str, value: str | None, allowed: Sequence[str]) -> None:
    if value is not None and value not in allowed:
        raise invalid_query(
            name, value, f"unknown {name} {value!r}; allowed: {', '.join(allowed)}", allowed=allowed
        )


def lookback_start(settings: ApiSettings) -> int:
    return now_ns() - int(settings.api_latest_lookback * NS_PER_S)


async def _latest_of_profile(
    influx: AsyncInfluxClient, profile: Profile, ids: list[str], since_ns: int
) -> dict[str, Reading]:
    series = await q.fetch(influx, q.latest_readings(profile, since_ns, device_ids=ids))
    return readings_by_device(profile, series)


@router.get(
    "",
    summary="Latest state of many devices",
    description="Registered devices filtered by profile and/or district, in device-id order, each "
    "with its latest reading within the lookback window (null if none). Unknown profile or "
    "district values are rejected with 422 listing the allowed ones.",
    responses=documented(401, 403, 502, 503),
)
async def list_devices(
    *,
    principal: PrincipalDep,
    contract: ContractDep,
    influx: InfluxDep,
    settings: SettingsDep,
    profile: Annotated[
        str | None, Query(description="Profile name", examples=["streetlight"])
    ] = None,
    district: Annotated[str | None, Query(description="District name")] = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> DeviceListPublic:
    check_choice("profile", profile, sorted(contract.profiles))
    check_choice("district", district, contract.districts)
    check_filters(principal, profile, district)
    matching = [
        d for d in contract.devices(profile, district) if principal.sees(d.profile, d.district)
    ]
    page = matching[offset : offset + limit]
    by_profile: dict[str, list[str]] = {}
    for device in page:
        by_profile.setdefault(device.profile, []).append(device.device_id)
    since = lookback_start(settings)
    found = await asyncio.gather(
        *(
            _latest_of_profile(influx, contract.profiles[p], ids, since)
            for p, ids in by_profile.items()
        )
    )
    latest = {k: v for readings in found for k, v in readings.items()}
    return DeviceListPublic(
        total=len(matching),
        limit=limit,
        offset=offset,
        items=[device_public(d, latest.get(d.device_id)) for d in page],
    )


@router.get(
    "/{device_id}",
    summary="One device and its latest reading",
    description="Registry metadata and the latest reading within the lookback window; a "
    "registered device that has not reported in that window has `reading: null`.",
    responses=documented(401, 403, 404, 502, 503),
)
async def get_device(
    *,
    principal: PrincipalDep,
    device_id: DeviceId,
    contract: ContractDep,
    influx: InfluxDep,
    settings: SettingsDep,
) -> DevicePublic:
    device = registered(contract, device_id)
    check_device(principal, device)
    profile = contract.profiles[device.profile]
    series = await q.fetch(
        influx, q.latest_reading(profile, device.device_id, lookback_start(settings))
    )
    return device_public(device, first_reading(profile, series))


@router.get(
    "/{device_id}/history",
    summary="Aggregated history of one field",
    description="`agg(field)` over [start, end) in buckets of `every`, aligned to the epoch "
    "(so the first bucket may start before `start`, covering only readings from `start` on). "
    "Buckets without readings are omitted. mean, min, max and sum need a numeric field.",
    responses=documented(401, 403, 404, 502, 503),
)
async def device_history(
    *,
    principal: PrincipalDep,
    device_id: DeviceId,
    contract: ContractDep,
    influx: InfluxDep,
    settings: SettingsDep,
    field: Annotated[str, Query(description="A field of the device's profile")],
    agg: Annotated[q.Aggregate, Query(description="Aggregate per bucket")] = q.Aggregate.MEAN,
    every: Annotated[str, Query(description="Bucket width, at least 1s", examples=["5m"])] = "5m",
    start: Annotated[str | None, Query(description="RFC 3339; default: 24 h before end")] = None,
    end: Annotated[str | None, Query(description="RFC 3339, exclusive; default: now")] = None,
) -> HistoryPublic:
    device = registered(contract, device_id)
    check_device(principal, device)
    profile = contract.profiles[device.profile]
    spec = profile.fields.get(field)
    if spec is None:
        fields = sorted(profile.fields)
        raise invalid_query(
            "field",
            field,
            f"{field!r} is not a field of profile {profile.profile!r}; "
            f"its fields: {', '.join(fields)}",
            allowed=fields,
        )
    if not agg.accepts(spec.type):
        raise invalid_query(
            "agg", agg.value, f"{agg.value} needs a numeric field; {field!r} is {spec.type.value}"
        )
    try:
        every_s = parse_whole_seconds(every, minimum=1)
    except ValueError as exc:
        raise invalid_query("every", every, str(exc)) from exc
    end_ns = _time_param("end", end) if end is not None else now_ns()
    start_ns = (
        _time_param("start", start) if start is not None else end_ns - DEFAULT_HISTORY_S * NS_PER_S
    )
    if end_ns <= start_ns:
        raise invalid_query("end", end, "end must be after start")
    points = bucket_count(start_ns, end_ns, every_s * NS_PER_S)
    if points > settings.api_history_max_points:
        raise invalid_query(
            "every",
            every,
            f"{points} buckets of {every_s}s between start and end exceed the maximum of "
            f"{settings.api_history_max_points}: widen every or narrow the window",
            max_points=settings.api_history_max_points,
        )
    query = q.history(
        profile, field, agg, device.device_id, start_ns=start_ns, end_ns=end_ns, every_s=every_s
    )
    buckets = [
        BucketPublic(
            time=format_rfc3339(row["time"]), value=aggregate_value(agg, spec, row["value"])
        )
        for series in await q.fetch(influx, query)
        for row in series.rows()
        if row["value"] is not None  # fill(none) drops empty buckets; this guards the type
    ]
    return HistoryPublic(
        device_id=device.device_id,
        profile=profile.profile,
        field=field,
        unit=spec.unit,
        agg=agg,
        every_seconds=every_s,
        start=format_rfc3339(start_ns),
        end=format_rfc3339(end_ns),
        points=buckets,
    )


def _time_param(name: str, text: str) -> int:
    try:
        return parse_rfc3339(text)
    except ValueError as exc:
        raise invalid_query(name, text, str(exc)) from exc
