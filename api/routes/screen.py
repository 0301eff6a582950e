"""The city operations screen: a static page served by the API itself (api/screen/), and the
three questions it asks besides the API's own routes: who am I (`/screen/view`), the district
outlines (`/screen/districts.geojson`) and everything to draw at start (`/screen/state`).

The page and its files need no token (a browser cannot send one for them); everything with data
does. The page keeps the token in sessionStorage and sends it as `Authorization: Bearer`."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Response
from fastapi.responses import FileResponse, RedirectResponse

from api.core.screen import ScreenSettings, asset, content_policy, outlines, screen_settings, view
from api.core.times import now_ns
from api.deps import ContractDep, LiveDep, PrincipalDep, SettingsDep
from api.errors import documented
from api.live.screen import snapshot

router = APIRouter(tags=["screen"])

ScreenDep = Annotated[ScreenSettings, Depends(screen_settings)]
# Assets are fixed for a version; a day is long enough to matter and short enough for upgrades.
CACHE = {"Cache-Control": "public, max-age=86400"}


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    return RedirectResponse("/screen")


@router.get("/screen", include_in_schema=False)
async def page(settings: ScreenDep) -> FileResponse:
    path, kind = asset("index.html")
    headers = {"Content-Security-Policy": content_policy(settings), "Cache-Control": "no-cache"}
    return FileResponse(path, media_type=kind, headers=headers)


@router.get("/screen/assets/{name:path}", include_in_schema=False)
async def screen_asset(name: Annotated[str, Path(max_length=200)]) -> FileResponse:
    path, kind = asset(name)
    return FileResponse(path, media_type=kind, headers=CACHE)


@router.get(
    "/screen/view",
    summary="What the operations screen shows for this token",
    description="The token's name and scope, whether it may acknowledge alarms, the profiles "
    "(fields, units, summary figures, alarm rules) and districts it may read, and the city's "
    "time zone and tile server. No device data.",
    responses=documented(401),
)
async def screen_view(
    principal: PrincipalDep, contract: ContractDep, screen: ScreenDep, settings: SettingsDep
) -> dict[str, Any]:
    return view(principal, contract, screen, settings.api_open_data_timezone)


@router.get(
    "/screen/districts.geojson",
    summary="District outlines for the screen's map",
    description="The operator's district outlines (CITYSENSE_SCREEN_DISTRICTS), those of the "
    "token's districts.",
    responses=documented(401),
)
async def district_outlines(principal: PrincipalDep, settings: ScreenDep) -> Response:
    return _json(outlines(settings, principal))


@router.get(
    "/screen/state",
    summary="Everything the screen draws at start",
    description="Every device the token sees as columns (id, lon, lat, and indexes into "
    "`profiles`, `districts`, `reporting`), its active alarms, and `event_id`: the stream "
    "(GET /stream with `Last-Event-ID: <event_id>`) continues exactly from this state. "
    "Open-data tokens get 403.",
    responses=documented(401, 403, 503),
)
async def screen_state(principal: PrincipalDep, contract: ContractDep, live: LiveDep) -> Response:
    return _json(snapshot(principal, contract, live, now_ns()))
