"""Devices: registry metadata with latest reading and status (from the live state,
api.live.devices), as JSON or GeoJSON, and one field's history (api.compute.history)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Response

from api.compute.history import HistoryRequest, history
from api.core.params import OFFSET_MAX
from api.core.query import Aggregate
from api.core.times import now_ns
from api.deps import ContractDep, InfluxDep, LiveDep, PrincipalDep, SettingsDep
from api.errors import documented
from api.live.devices import (
    DeviceFilter,
    device_json,
    device_page,
    feature_collection,
    select,
    visible_device,
)
from api.schemas import (
    DeviceFilterQuery,
    DeviceListPublic,
    DevicePublic,
    FeatureCollectionPublic,
    HistoryPublic,
)

router = APIRouter(prefix="/devices", tags=["devices"])
# /devices.geojson is no sub-path of /devices: a device may be called "geojson".
geo_router = APIRouter(tags=["devices"])

PAGE_MAX = 1000
GEOJSON_MAX = 100_000  # a whole profile of a district roll-out on one map

DeviceId = Annotated[str, Path(description="Device id from the registry", examples=["SL-000001"])]
Filters = Annotated[DeviceFilterQuery, Query()]


def _json(body: dict[str, Any]) -> Response:
    # Plain dicts shaped like the response models, serialized by orjson (api.live.devices).
    return Response(orjson.dumps(body), media_type="application/json")


LIST_DOC = """Registered devices in device-id order, each with its latest reading and status,
from the API's in-process state (kept ≤ 1 s behind ingest by the state feed). Filters combine:
profile, district, reporting status, connection and a bounding box. A department token sees
only its own devices; open-data tokens get 403."""


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
    filters: Filters,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 100,
    offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
) -> Response:
    now = now_ns()
    matching = select(principal, contract, live, now, DeviceFilter(**filters.model_dump()))
    return _json(device_page(live, matching, now, limit, offset))


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
    filters: Filters,
    limit: Annotated[int, Query(ge=1, le=GEOJSON_MAX)] = 10_000,
    offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
) -> Response:
    now = now_ns()
    matching = select(principal, contract, live, now, DeviceFilter(**filters.model_dump()))
    return _json(feature_collection(live, matching, now, limit, offset))


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
    device = visible_device(principal, contract, device_id)
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
    agg: Annotated[Aggregate, Query(description="Aggregate per window")] = Aggregate.MEAN,
    every: Annotated[
        str, Query(description="Window: a width such as 5m, or hour, day, week, month")
    ] = "5m",
    tz: Annotated[str, Query(description="IANA time zone of calendar windows")] = "UTC",
    start: Annotated[str | None, Query(description="RFC 3339; default: 24 h before end")] = None,
    end: Annotated[str | None, Query(description="RFC 3339, exclusive; default: now")] = None,
) -> HistoryPublic:
    device = visible_device(principal, contract, device_id)
    request = HistoryRequest(field=field, agg=agg, every=every, tz=tz, start=start, end=end)
    profile = contract.profiles[device.profile]
    return await history(request, device, profile, influx=influx, settings=settings)
