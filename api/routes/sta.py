"""The OGC SensorThings API 1.1 (sensing part, read only) at /sta/v1.1: the request is handed
to api.sta as a path and its query options; errors come back as api.sta.errors.StaError."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request, Response

from api.core.access import require_devices
from api.deps import ContractDep, InfluxDep, PrincipalDep
from api.errors import documented
from api.sta.errors import bad_request
from api.sta.service import StaRequest, answer, service_root

ROOT = "/sta/v1.1"
router = APIRouter(prefix=ROOT, tags=["SensorThings API 1.1"])

Option = Annotated[str | None, Query()]
ResourcePath = Annotated[
    str, Path(description="A resource path: Things, Things('SL-1')/Datastreams, …/$ref")
]

DOC = """SensorThings 1.1 resources: Things (devices), Locations, HistoricalLocations (none),
Sensors (profiles and vendor variants), ObservedProperties (profile fields), Datastreams (one
per device and field), Observations (stored readings) and FeaturesOfInterest, with navigation,
`$ref`, `$value` and the query options $top, $skip, $count, $orderby, $select, $expand, $filter,
$resultFormat=dataArray. Errors: `{"code", "type": "error", "message"}`."""


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + ROOT


def _options(request: Request) -> dict[str, str]:
    options: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name in options:
            raise bad_request(f"query option {name} is given twice")
        options[name] = value
    return options


@router.get("", summary="SensorThings service root", responses=documented(401, 403))
async def sta_root(request: Request, principal: PrincipalDep) -> Response:
    require_devices(principal)
    return _json(service_root(_base(request)))


@router.get(
    "/{path:path}",
    summary="A SensorThings resource",
    description=DOC,
    responses=documented(401, 403, 404, 502, 503),
)
async def sta_resource(
    *,
    request: Request,
    path: ResourcePath,
    principal: PrincipalDep,
    contract: ContractDep,
    influx: InfluxDep,
    top: Annotated[str | None, Query(alias="$top")] = None,
    skip: Annotated[str | None, Query(alias="$skip")] = None,
    count: Annotated[str | None, Query(alias="$count")] = None,
    orderby: Annotated[str | None, Query(alias="$orderby")] = None,
    select: Annotated[str | None, Query(alias="$select")] = None,
    expand: Annotated[str | None, Query(alias="$expand")] = None,
    filter_: Annotated[str | None, Query(alias="$filter")] = None,
    result_format: Annotated[str | None, Query(alias="$resultFormat")] = None,
) -> Response:
    require_devices(principal)
    if not path.strip("/"):  # the root with a trailing slash
        return _json(service_root(_base(request)))
    sta = StaRequest(_base(request), path, _options(request))
    result = await answer(sta, principal, contract, influx)
    if result.text is not None:
        return Response(result.text, media_type="text/plain")
    assert result.body is not None
    return _json(result.body)
