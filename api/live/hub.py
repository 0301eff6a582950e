"""Fan-out of live events (state changes, reporting and connection transitions, alarm events) to
Server-Sent-Events clients.

Everything here runs on the event loop thread: the MQTT thread hands messages over with
`call_soon_threadsafe`, so no lock is needed. Each client has a bounded queue; a client that
falls that far behind is disconnected (it gets an `overflow` event and reconnects with a fresh
snapshot) rather than slowing everyone or growing memory without bound.

The hub also keeps the most recent events, a ring bounded in count (`REPLAY_EVENTS`), so that a
client whose connection dropped resumes after the last event id it saw (`since`, the SSE
`Last-Event-ID`) without losing any. Event ids start from the microseconds since the epoch when
the process started, so an id handed out by an earlier process is never mistaken for one of this
process: such a client is told to reload instead.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

EventKind = Literal["reading", "reporting", "connection", "alarm"]
EVENT_KINDS: tuple[EventKind, ...] = ("reading", "reporting", "connection", "alarm")

# Events kept for clients resuming a dropped stream: about 30 s of a city of 100,000 devices
# reporting every minute (1,667 events/s), at roughly 1 KB each in memory once encoded.
REPLAY_EVENTS = 30_000


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
    def __init__(self, queue_size: int, replay: int = REPLAY_EVENTS) -> None:
        self._queue_size = queue_size
        self._subscriptions: set[Subscription] = set()
        self._first = time.time_ns() // 1000 + 1
        self._seq = itertools.count(self._first)
        self._recent: deque[Event] = deque(maxlen=replay)
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

    @property
    def last_id(self) -> int:
        """The id of the newest event published (one before the first, before any)."""
        return self._recent[-1].seq if self._recent else self._first - 1

    def since(self, last_id: int) -> list[Event] | None:
        """The events published after `last_id`, oldest first; None when some of them are no
        longer kept or `last_id` is not an id of this process (the client must reload)."""
        if last_id == self.last_id:
            return []
        recent = self._recent
        if last_id > self.last_id or not recent or recent[0].seq > last_id + 1:
            return None
        # Every event published is kept in order, so the ids in the ring are consecutive.
        return list(itertools.islice(recent, last_id + 1 - recent[0].seq, None))

    def publish(
        self, kind: EventKind, profile: str, district: str, device_id: str, data: dict[str, Any]
    ) -> Event:
        event = Event(kind, profile, district, device_id, data, next(self._seq))
        self._recent.append(event)
        for subscription in list(self._subscriptions):
            if not subscription.accepts(event):
                continue
            try:
                subscription.queue.put_nowait(event)
            except asyncio.QueueFull:
                subscription.overflowed = True
                self._subscriptions.discard(subscription)
        # Listeners after the clients: one that publishes (an alarm raised by this reading)
        # publishes the next id, which must reach each client after this one. Called first, it
        # reached them before: a client overflowing just then resumed from the later id, and
        # never got this one (found by a review).
        for listener in self.listeners:
            listener(event)
        return event
