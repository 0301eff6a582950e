"""Live push: Server-Sent Events of state changes, reporting and connection transitions and alarm
events, filtered by profile, district and kind, and by the token's scope (api.live.stream)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from api.deps import ContractDep, LiveDep, PrincipalDep, SettingsDep
from api.errors import documented
from api.live.hub import EventKind
from api.live.stream import frames, missed, subscribe

router = APIRouter(tags=["live"])

DOC = """A `text/event-stream` of live events; each has `event:` (reading, reporting,
connection, alarm), `id:` and `data:` (JSON with profile, district, device_id and the event's
data). A comment line is sent every heartbeat interval to keep proxies from closing the stream.
A client too slow to keep up receives an `overflow` event and is disconnected: reconnect and
re-read the state (GET /devices). Open-data tokens get 403; department tokens only see their
devices.

A client that lost its connection sends the last `id:` it received as `Last-Event-ID` and first
gets the events it missed (the API keeps the most recent 30,000 events), or, when those are no
longer kept, a `reset` event: re-read the state, then resume."""


@router.get(
    "/stream",
    summary="Live events (Server-Sent Events)",
    description=DOC,
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **documented(401, 403)},
)
async def stream(
    *,
    request: Request,
    principal: PrincipalDep,
    contract: ContractDep,
    live: LiveDep,
    settings: SettingsDep,
    profile: Annotated[str | None, Query()] = None,
    district: Annotated[str | None, Query()] = None,
    kind: Annotated[list[EventKind] | None, Query(description="Event kinds; default all")] = None,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> StreamingResponse:
    subscription = subscribe(
        live.hub, principal, contract, profile=profile, district=district, kinds=kind
    )
    backlog = missed(live.hub, subscription, last_event_id)
    heartbeat = settings.api_stream_heartbeat
    body = frames(live.hub, subscription, heartbeat, request.is_disconnected, backlog)
    return StreamingResponse(
        body, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
