"""Devices: registry metadata with latest reading and status (from the in-process state), as JSON
or GeoJSON, and one field's history (from InfluxDB)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, overload

import orjson
from fastapi import APIRouter, HTTPException, Path, Query, Response

from api.core import query as q
from api.core.access import check_device, check_filters
from api.core.contract import Contract
from api.core.counters import deltas, rate_per_hour
from api.core.params import OFFSET_MAX, check_choice, time_window
from api.core.readings import aggregate_value
from api.core.times import NS_PER_S, bucket_count, format_rfc3339, now_ns, parse_whole_seconds
from api.core.tokens import Principal
from api.core.windows import (
    Calendar,
    Window,
    calendar_windows,
    count_calendar_windows,
    fixed_windows,
    zone,
)
from api.deps import ContractDep, InfluxDep, LiveDep, PrincipalDep, SettingsDep
from api.errors import documented, invalid_query
from api.live.service import Live
from api.live.state import DeviceState
from api.live.state import Reporting as RepStatus
from api.schemas import (
    BucketPublic,
    DeviceListPublic,
    DevicePublic,
    FeatureCollectionPublic,
    HistoryPublic,
    Reporting,
)
from device_profiles import Device

router = APIRouter(prefix="/devices", tags=["devices"])
# /devices.geojson is no sub-path of /devices: a device may be called "geojson".
geo_router = APIRouter(tags=["devices"])

PAGE_MAX = 1000
GEOJSON_MAX = 100_000  # a whole profile of a district roll-out on one map

DeviceId = Annotated[str, Path(description="Device id from the registry", examples=["SL-000001"])]


# The three routes below answer from the in-process state, up to 100,000 devices in one answer.
# They build plain dicts shaped like their response models (DevicePublic, DeviceListPublic,
# FeatureCollectionPublic, which document them) and serialize with orjson: constructing and
# validating four pydantic models per device took 2.2 s of a 2.7 s answer for 60,000 features.
# tests/unit/test_api_app.py validates these answers against the models.


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def _status(live: Live, state: DeviceState, now: int) -> dict[str, Any]:
    reading = state.reading
    return {
        "reporting": live.state.reporting(state, now).value,
        "connected": state.connected,
        "last_seen": None if reading is None else format_rfc3339(reading.time_ns),
    }


def device_json(live: Live, state: DeviceState, now: int) -> dict[str, Any]:
    """A DevicePublic."""
    device, reading = state.device, state.reading
    status = _status(live, state, now)
    return {
        "device_id": device.device_id,
        "profile": device.profile,
        "district": device.district,
        "latitude": device.latitude,
        "longitude": device.longitude,
        "address": device.address,
        "status": status,
        "reading": None
        if reading is None
        else {"time": status["last_seen"], "values": reading.values},
    }


def feature_json(live: Live, state: DeviceState, now: int) -> dict[str, Any]:
    """A FeaturePublic."""
    device, reading = state.device, state.reading
    return {
        "type": "Feature",
        "id": device.device_id,
        "geometry": {"type": "Point", "coordinates": [device.longitude, device.latitude]},
        "properties": {
            "device_id": device.device_id,
            "profile": device.profile,
            "district": device.district,
            **_status(live, state, now),
            "values": {} if reading is None else reading.values,
        },
    }


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


class _States(Sequence[DeviceState]):
    """The states of a device list, looked up only for the slice a page shows."""

    def __init__(self, devices: Sequence[Device], states: Mapping[str, DeviceState]) -> None:
        self._devices = devices
        self._states = states

    def __len__(self) -> int:
        return len(self._devices)

    @overload
    def __getitem__(self, index: int) -> DeviceState: ...
    @overload
    def __getitem__(self, index: slice) -> list[DeviceState]: ...
    def __getitem__(self, index: int | slice) -> DeviceState | list[DeviceState]:
        if isinstance(index, slice):
            return [self._states[d.device_id] for d in self._devices[index]]
        return self._states[self._devices[index].device_id]


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
) -> Sequence[DeviceState]:
    check_choice("profile", profile, sorted(contract.profiles))
    check_choice("district", district, contract.districts)
    box = parse_bbox(bbox)
    check_filters(principal, profile, district)
    live.require_loaded()
    listed = contract.devices(profile, district)
    if (
        principal.sees_devices
        and principal.profiles is None
        and principal.districts is None
        and status is None
        and connected is None
        and box is None
    ):
        # Nothing to filter: a page costs its own devices, not the whole selection's (a
        # district's first page of 1,000 scanned all 16,667 of its devices).
        return _States(listed, live.state.devices)
    devices = (d for d in listed if principal.sees(d.profile, d.district))
    return live.state.select(
        now,
        devices,
        reporting=None if status is None else RepStatus(status),
        connected=connected,
        bbox=box,
    )


@router.get(
    "",
    response_model=DeviceListPublic,
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
    offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
) -> Response:
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
    return _json(
        {
            "total": len(matching),
            "limit": limit,
            "offset": offset,
            "items": [device_json(live, s, now) for s in matching[offset : offset + limit]],
        }
    )


@geo_router.get(
    "/devices.geojson",
    response_model=FeatureCollectionPublic,
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
    offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
) -> Response:
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
    return _json(
        {
            "type": "FeatureCollection",
            "total": len(matching),
            "limit": limit,
            "offset": offset,
            "features": [feature_json(live, s, now) for s in matching[offset : offset + limit]],
        }
    )


@router.get(
    "/{device_id}",
    response_model=DevicePublic,
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
) -> Response:
    device = registered(contract, device_id)
    check_device(principal, device)
    live.require_loaded()
    return _json(device_json(live, live.state.devices[device.device_id], now_ns()))


HISTORY_DOC = """`agg(field)` of one device over [start, end), per window of `every`.

- **every**: a width (`90s`, `5m`, `1h`, `1d`), windows aligned to the epoch as InfluxDB's GROUP BY
  time() makes them (the first may start before `start` but covers readings from `start` on); or
  a calendar unit, `hour`, `day`, `week` (from Monday) or `month`, in the time zone `tz`
  (IANA, e.g. Asia/Shanghai), with DST days as long as the wall clock says. `tz` only applies to
  calendar units. Windows without readings are omitted.
- **agg**: mean, min, max, sum, count, first, last, spread. mean, min, max, sum and spread need a
  numeric field. A **counter** (kind: counter, e.g. kWh imported) is never averaged or summed:
  use `delta` (its increase in the window) or `rate` (increase per hour over the part of the
  window inside [start, end)), where each increase between consecutive readings belongs to the
  window of the later reading and a reset counts from 0. min, max, first, last and count of a
  counter are its register values."""

CALENDAR_MAX = 1000  # one InfluxQL statement per calendar window


@router.get(
    "/{device_id}/history",
    summary="Aggregated history of one field",
    description=HISTORY_DOC,
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
    agg: Annotated[q.Aggregate, Query(description="Aggregate per window")] = q.Aggregate.MEAN,
    every: Annotated[
        str, Query(description="Window: a width such as 5m, or hour, day, week, month")
    ] = "5m",
    tz: Annotated[str, Query(description="IANA time zone of calendar windows")] = "UTC",
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
    problem = agg.problem(spec)
    if problem is not None:
        raise invalid_query("agg", agg.value, f"{problem} ({field!r})")
    start_ns, end_ns = time_window(start, end)
    windows, every_s = window_list(every, tz, start_ns, end_ns, settings.api_history_max_points)
    if agg.on_counter:
        query = q.counter_readings(
            profile,
            field,
            device.device_id,
            start_ns=start_ns,
            end_ns=end_ns,
            since_ns=start_ns - int(settings.api_latest_lookback * NS_PER_S),
        )
        before, inside = await q.fetch_all(influx, query)
        previous = next((float(r["value"]) for s in before for r in s.rows()), None)
        readings = [(int(r["time"]), float(r["value"])) for s in inside for r in s.rows()]
        values = deltas(previous, readings, windows)
        buckets = [
            BucketPublic(
                time=format_rfc3339(w[0]),
                value=v if agg is q.Aggregate.DELTA else rate_per_hour(v, w, start_ns, end_ns),
            )
            for w, v in zip(windows, values, strict=True)
            if v is not None
        ]
    elif every_s is not None:
        query = q.history(
            profile,
            field,
            agg,
            device.device_id,
            start_ns=start_ns,
            end_ns=end_ns,
            every_s=every_s,
        )
        buckets = [
            BucketPublic(
                time=format_rfc3339(row["time"]), value=aggregate_value(agg, spec, row["value"])
            )
            for series in await q.fetch(influx, query)
            for row in series.rows()
            if row["value"] is not None  # fill(none) drops empty buckets; this guards the type
        ]
    else:
        clipped = [(max(b, start_ns), min(e, end_ns)) for b, e in windows]
        results = await q.fetch_all(
            influx, q.history_windows(profile, field, agg, device.device_id, clipped)
        )
        buckets = [
            BucketPublic(time=format_rfc3339(w[0]), value=aggregate_value(agg, spec, row["value"]))
            for w, result in zip(windows, results, strict=True)
            for series in result
            for row in series.rows()
            if row["value"] is not None
        ]
    unit = spec.unit
    if agg is q.Aggregate.RATE and unit:
        unit = f"{unit}/h"
    elif agg is q.Aggregate.COUNT:
        unit = None
    return HistoryPublic(
        device_id=device.device_id,
        profile=profile.profile,
        field=field,
        unit=unit,
        agg=agg,
        every=every,
        tz=tz if every_s is None else None,
        every_seconds=every_s,
        start=format_rfc3339(start_ns),
        end=format_rfc3339(end_ns),
        points=buckets,
    )


def window_list(
    every: str, tz: str, start_ns: int, end_ns: int, max_points: int
) -> tuple[list[Window], int | None]:
    """The windows of the request and, for a fixed width, that width in seconds."""
    try:
        zone_info = zone(tz)
    except ValueError as exc:
        raise invalid_query("tz", tz, str(exc)) from exc
    if every in Calendar.__members__.values():
        unit = Calendar(every)
        if count_calendar_windows(start_ns, end_ns, unit) > CALENDAR_MAX + 2:
            raise invalid_query(
                "every", every, f"more than {CALENDAR_MAX} {every} windows: narrow the window"
            )
        windows = calendar_windows(start_ns, end_ns, unit, zone_info)
        if len(windows) > CALENDAR_MAX:
            raise invalid_query(
                "every", every, f"more than {CALENDAR_MAX} {every} windows: narrow the window"
            )
        return windows, None
    try:
        every_s = parse_whole_seconds(every, minimum=1)
    except ValueError as exc:
        raise invalid_query("every", every, f"{exc}, or one of hour, day, week, month") from exc
    points = bucket_count(start_ns, end_ns, every_s * NS_PER_S)
    if points > max_points:
        raise invalid_query(
            "every",
            every,
            f"{points} buckets of {every_s}s between start and end exceed the maximum of "
            f"{max_points}: widen every or narrow the window",
            max_points=max_points,
        )
    return fixed_windows(start_ns, end_ns, every_s * NS_PER_S), every_s
