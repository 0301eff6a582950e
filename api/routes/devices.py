"""Devices: registry metadata with latest reading and status (from the in-process state), as JSON
or GeoJSON, and one field's history (from InfluxDB)."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query

from api import query as q
from api.access import check_device, check_filters
from api.contract import Contract
from api.deps import ContractDep, InfluxDep, LiveDep, PrincipalDep, SettingsDep
from api.errors import documented, invalid_query
from api.live import Live
from api.params import check_choice, time_param
from api.readings import aggregate_value
from api.schemas import (
    BucketPublic,
    DeviceListPublic,
    DevicePublic,
    FeatureCollectionPublic,
    FeaturePropertiesPublic,
    FeaturePublic,
    HistoryPublic,
    PointGeometry,
    ReadingPublic,
    Reporting,
    StatusPublic,
)
from api.state import DeviceState
from api.state import Reporting as RepStatus
from api.times import NS_PER_S, bucket_count, format_rfc3339, now_ns, parse_whole_seconds
from api.tokens import Principal
from device_profiles import Device

router = APIRouter(prefix="/devices", tags=["devices"])
# /devices.geojson is no sub-path of /devices: a device may be called "geojson".
geo_router = APIRouter(tags=["devices"])

PAGE_MAX = 1000
GEOJSON_MAX = 100_000  # a whole profile of a district roll-out on one map
DEFAULT_HISTORY_S = 86400

DeviceId = Annotated[str, Path(description="Device id from the registry", examples=["SL-000001"])]


def status_public(live: Live, state: DeviceState, now: int) -> StatusPublic:
    return StatusPublic(
        reporting=live.state.reporting(state, now).value,
        connected=state.connected,
        last_seen=None if state.reading is None else format_rfc3339(state.reading.time_ns),
    )


def device_public(live: Live, state: DeviceState, now: int) -> DevicePublic:
    device, reading = state.device, state.reading
    return DevicePublic(
        device_id=device.device_id,
        profile=device.profile,
        district=device.district,
        latitude=device.latitude,
        longitude=device.longitude,
        address=device.address,
        status=status_public(live, state, now),
        reading=None
        if reading is None
        else ReadingPublic(time=format_rfc3339(reading.time_ns), values=reading.values),
    )


def feature_public(live: Live, state: DeviceState, now: int) -> FeaturePublic:
    device, status = state.device, status_public(live, state, now)
    return FeaturePublic(
        id=device.device_id,
        geometry=PointGeometry(coordinates=(device.longitude, device.latitude)),
        properties=FeaturePropertiesPublic(
            device_id=device.device_id,
            profile=device.profile,
            district=device.district,
            reporting=status.reporting,
            connected=status.connected,
            last_seen=status.last_seen,
            values={} if state.reading is None else state.reading.values,
        ),
    )


def registered(contract: Contract, device_id: str) -> Device:
    device = contract.device(device_id)
    if device is None:
        raise HTTPException(404, f"unknown device {device_id!r}: not in the device registry")
    return device


def parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    try:
        box = tuple(float(part) for part in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise invalid_query("bbox", text, "bbox is min_lon,min_lat,max_lon,max_lat (4 numbers)")
    min_lon, min_lat, max_lon, max_lat = box
    if not (-180 <= min_lon <= max_lon <= 180 and -90 <= min_lat <= max_lat <= 90):
        raise invalid_query(
            "bbox",
            text,
            "bbox needs -180 <= min_lon <= max_lon <= 180 and -90 <= min_lat <= max_lat <= 90 "
            "(a box across the antimeridian is two requests)",
        )
    return min_lon, min_lat, max_lon, max_lat


LIST_DOC = """Registered devices in device-id order, each with its latest reading and status,
from the API's in-process state (kept ≤ 1 s behind ingest by the state feed). Filters combine:
profile, district, reporting status, connection and a bounding box. A department token sees
only its own devices; open-data tokens get 403."""

ProfileFilter = Annotated[str | None, Query(description="Profile name", examples=["streetlight"])]
DistrictFilter = Annotated[str | None, Query(description="District name")]
StatusFilter = Annotated[
    Reporting | None, Query(alias="status", description="Reporting status right now")
]
ConnectedFilter = Annotated[
    bool | None, Query(description="Connection status from the retained status topic")
]
BboxFilter = Annotated[
    str | None,
    Query(
        description="min_lon,min_lat,max_lon,max_lat (WGS 84), inclusive",
        examples=["120.0,30.0,120.5,30.5"],
    ),
]


def _select(
    *,
    principal: Principal,
    contract: Contract,
    live: Live,
    now: int,
    profile: str | None,
    district: str | None,
    status: Reporting | None,
    connected: bool | None,
    bbox: str | None,
) -> list[DeviceState]:
    check_choice("profile", profile, sorted(contract.profiles))
    check_choice("district", district, contract.districts)
    box = parse_bbox(bbox)
    check_filters(principal, profile, district)
    live.require_loaded()
    devices = (
        d for d in contract.devices(profile, district) if principal.sees(d.profile, d.district)
    )
    return live.state.select(
        now,
        devices,
        reporting=None if status is None else RepStatus(status),
        connected=connected,
        bbox=box,
    )


@router.get(
    "",
    summary="Latest state of many devices",
    description=LIST_DOC,
    responses=documented(401, 403, 503),
)
async def list_devices(
    *,
    principal: PrincipalDep,
    contract: ContractDep,
    live: LiveDep,
    profile: ProfileFilter = None,
    district: DistrictFilter = None,
    status: StatusFilter = None,
    connected: ConnectedFilter = None,
    bbox: BboxFilter = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> DeviceListPublic:
    now = now_ns()
    matching = _select(
        principal=principal,
        contract=contract,
        live=live,
        now=now,
        profile=profile,
        district=district,
        status=status,
        connected=connected,
        bbox=bbox,
    )
    return DeviceListPublic(
        total=len(matching),
        limit=limit,
        offset=offset,
        items=[device_public(live, s, now) for s in matching[offset : offset + limit]],
    )


@geo_router.get(
    "/devices.geojson",
    summary="Latest state of many devices as GeoJSON, for maps",
    description="The same selection as GET /devices, as a GeoJSON FeatureCollection of Points "
    "(`[longitude, latitude]`); each feature's properties hold the device's status and, under "
    "`values`, its latest values (nested so a field named like a status key cannot clash).",
    responses=documented(401, 403, 503),
)
async def devices_geojson(
    *,
    principal: PrincipalDep,
    contract: ContractDep,
    live: LiveDep,
    profile: ProfileFilter = None,
    district: DistrictFilter = None,
    status: StatusFilter = None,
    connected: ConnectedFilter = None,
    bbox: BboxFilter = None,
    limit: Annotated[int, Query(ge=1, le=GEOJSON_MAX)] = 10_000,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> FeatureCollectionPublic:
    now = now_ns()
    matching = _select(
        principal=principal,
        contract=contract,
        live=live,
        now=now,
        profile=profile,
        district=district,
        status=status,
        connected=connected,
        bbox=bbox,
    )
    return FeatureCollectionPublic(
        total=len(matching),
        limit=limit,
        offset=offset,
        features=[feature_public(live, s, now) for s in matching[offset : offset + limit]],
    )


@router.get(
    "/{device_id}",
    summary="One device: latest reading and status",
    description="Registry metadata, status and the latest reading within the lookback window "
    "(from the in-process state); a registered device that has not reported in that window has "
    "`reading: null` and reporting `never`.",
    responses=documented(401, 403, 404, 503),
)
async def get_device(
    *,
    principal: PrincipalDep,
    device_id: DeviceId,
    contract: ContractDep,
    live: LiveDep,
) -> DevicePublic:
    device = registered(contract, device_id)
    check_device(principal, device)
    live.require_loaded()
    return device_public(live, live.state.devices[device.device_id], now_ns())


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
    end_ns = time_param("end", end) if end is not None else now_ns()
    start_ns = (
        time_param("start", start) if start is not None else end_ns - DEFAULT_HISTORY_S * NS_PER_S
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
