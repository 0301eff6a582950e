"""Live push: Server-Sent Events of state changes, reporting and connection transitions and alarm
events, filtered by profile, district and kind, and by the token's scope."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from api.core.access import check_filters
from api.core.params import check_choice
from api.deps import ContractDep, LiveDep, PrincipalDep, SettingsDep
from api.errors import documented
from api.live.hub import EVENT_KINDS, Event, EventKind

router = APIRouter(tags=["live"])

BATCH = 500  # events at most in one write to a client

DOC = """A `text/event-stream` of live events; each has `event:` (reading, reporting,
connection, alarm), `id:` and `data:` (JSON with profile, district, device_id and the event's
data). A comment line is sent every heartbeat interval to keep proxies from closing the stream.
A client too slow to keep up receives an `overflow` event and is disconnected: reconnect and
re-read the state (GET /devices). Open-data tokens get 403; department tokens only see their
devices."""


def _frame(event: Event) -> bytes:
    frame = event.encoded.get("sse")
    if frame is None:
        body = {
            "profile": event.profile,
            "district": event.district,
            "device_id": event.device_id,
            **event.data,
        }
        frame = event.encoded["sse"] = b"event: %s\nid: %d\ndata: %s\n\n" % (
            event.kind.encode(),
            event.seq,
            orjson.dumps(body),
        )
    return frame


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
) -> StreamingResponse:
    check_choice("profile", profile, sorted(contract.profiles))
    check_choice("district", district, contract.districts)
    check_filters(principal, profile, district)
    kinds = set(kind or EVENT_KINDS)

    def accepts(event: Event) -> bool:
        return (
            event.kind in kinds
            and (profile is None or event.profile == profile)
            and (district is None or event.district == district)
            and principal.sees(event.profile, event.district)
        )

    subscription = live.hub.subscribe(accepts)
    heartbeat = settings.api_stream_heartbeat

    async def frames() -> AsyncIterator[bytes]:
        queue = subscription.queue
        try:
            yield b": connected\n\n"
            while not await request.is_disconnected():
                if queue.empty():
                    try:
                        event = await asyncio.wait_for(queue.get(), heartbeat)
                    except TimeoutError:
                        if subscription.overflowed:
                            yield b"event: overflow\ndata: {}\n\n"
                            return
                        yield b": heartbeat\n\n"
                        continue
                else:
                    event = queue.get_nowait()
                # Whatever else is queued goes out in the same write: per write, the response
                # machinery costs far more than an event's bytes (100 clients at 300 events/s
                # each took a whole core when every event was written on its own).
                chunk = [_frame(event)]
                while len(chunk) < BATCH and not queue.empty():
                    chunk.append(_frame(queue.get_nowait()))
                yield b"".join(chunk)
        finally:
            live.hub.unsubscribe(subscription)

    return StreamingResponse(
        frames(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
