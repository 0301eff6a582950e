"""The latest state as a snapshot, for a replica starting without one (api.live.peer)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from api.core.errors import forbidden
from api.core.tokens import Scope
from api.deps import LiveDep, PrincipalDep
from api.errors import documented

router = APIRouter(prefix="/state", tags=["state"])


@router.get(
    "/snapshot",
    summary="Every device's latest state, for another replica",
    description="The state this replica holds, encoded now (api.live.snapshot's format: "
    "checksummed, tied to its registry and database), with what the state feed vouched for. "
    "A replica started with `CITYSENSE_API_STATE_PEER` set to this one's URL starts from it "
    "instead of loading every device from InfluxDB. Needs a `city` token: it is every "
    "device's latest reading.",
    response_class=StreamingResponse,
    responses=documented(401, 403, 503),
)
async def state_snapshot(principal: PrincipalDep, live: LiveDep) -> StreamingResponse:
    if principal.scope is not Scope.CITY:
        raise forbidden("the latest state of every device needs a city token")
    live.require_loaded()
    parts = live.snapshot_parts()
    return StreamingResponse(iter(parts), media_type="application/octet-stream")
