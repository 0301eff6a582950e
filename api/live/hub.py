"""Fan-out of live events (state changes, reporting and connection transitions, alarm events) to
Server-Sent-Events clients.

Everything here runs on the event loop thread: the MQTT thread hands messages over with
`call_soon_threadsafe`, so no lock is needed. Each client has a bounded queue; a client that
falls that far behind is disconnected (it gets an `overflow` event and reconnects with a fresh
snapshot) rather than slowing everyone or growing memory without bound.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

EventKind = Literal["reading", "reporting", "connection", "alarm"]
EVENT_KINDS: tuple[EventKind, ...] = ("reading", "reporting", "connection", "alarm")


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    profile: str
    district: str
    device_id: str
    data: dict[str, Any]
    seq: int = 0
    # An event's encoding for a transport (its SSE frame), made once for all the clients that
    # get it rather than once per client.
    encoded: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)


@dataclass(eq=False)
class Subscription:
    accepts: Callable[[Event], bool]
    queue: asyncio.Queue[Event]
    overflowed: bool = field(default=False)


class Hub:
    def __init__(self, queue_size: int) -> None:
        self._queue_size = queue_size
        self._subscriptions: set[Subscription] = set()
        self._seq = itertools.count(1)
        self.listeners: list[Callable[[Event], None]] = []  # in-process consumers (alarms)

    def subscribe(self, accepts: Callable[[Event], bool]) -> Subscription:
        subscription = Subscription(accepts, asyncio.Queue(self._queue_size))
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    @property
    def clients(self) -> int:
        return len(self._subscriptions)

    def publish(
        self, kind: EventKind, profile: str, district: str, device_id: str, data: dict[str, Any]
    ) -> Event:
        event = Event(kind, profile, district, device_id, data, next(self._seq))
        for listener in self.listeners:
            listener(event)
        for subscription in list(self._subscriptions):
            if not subscription.accepts(event):
                continue
            try:
                subscription.queue.put_nowait(event)
            except asyncio.QueueFull:
                subscription.overflowed = True
                self._subscriptions.discard(subscription)
        return event
