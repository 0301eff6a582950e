"""Live events as Server-Sent Events frames: a subscription to the hub within the token's scope,
the events a resuming client missed (`Last-Event-ID`), and the frames written to one client
until it goes away or falls too far behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection

import orjson

from api.core.access import check_filters
from api.core.contract import Contract
from api.core.params import check_choice
from api.core.tokens import Principal
from api.live.hub import EVENT_KINDS, Event, Hub, Subscription

BATCH = 500  # events at most in one write to a client
# Sent instead of a replay the hub cannot give (the missed events are no longer kept, or the id
# is not one of this process): the client must reload the state, then resume from there.
RESET = b'event: reset\ndata: {"reason": "events after Last-Event-ID are no longer kept"}\n\n'


def subscribe(
    hub: Hub,
    principal: Principal,
    contract: Contract,
    *,
    profile: str | None,
    district: str | None,
    kinds: Collection[str] | None,
) -> Subscription:
    check_choice("profile", profile, sorted(contract.profiles))
    check_choice("district", district, contract.districts)
    check_filters(principal, profile, district)
    wanted = set(kinds or EVENT_KINDS)

    def accepts(event: Event) -> bool:
        return (
            event.kind in wanted
            and (profile is None or event.profile == profile)
            and (district is None or event.district == district)
            and principal.sees(event.profile, event.district)
        )

    return hub.subscribe(accepts)


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


def missed(hub: Hub, subscription: Subscription, last_event_id: str | None) -> list[bytes]:
    """The frames of the events after `last_event_id` that `subscription` accepts, or a `reset`
    event. Called right after subscribing, with no await between: together they cover every
    event exactly once (the ring up to now, the queue from now on)."""
    if last_event_id is None:
        return []
    try:
        events = hub.since(int(last_event_id))
    except ValueError:
        events = None
    if events is None:
        return [RESET]
    return [_frame(event) for event in events if subscription.accepts(event)]


async def frames(
    hub: Hub,
    subscription: Subscription,
    heartbeat: float,
    disconnected: Callable[[], Awaitable[bool]],
    backlog: list[bytes] | None = None,
) -> AsyncIterator[bytes]:
    """The bytes of the stream, `backlog` first (api.live.stream.missed), ending with an
    `overflow` event if the client fell behind."""
    queue = subscription.queue
    try:
        yield b": connected\n\n"
        for start in range(0, len(backlog or ()), BATCH):
            yield b"".join((backlog or [])[start : start + BATCH])
        while not await disconnected():
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
        hub.unsubscribe(subscription)
