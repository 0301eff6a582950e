"""Batch: gather the lines of many messages into one write, by size and by age.

A message's lines never straddle two batches, so its acknowledgement follows the write of all of
them. Each message's ticket (ingest.acks) travels in the batch to the writer, which settles the
tickets once the batch is stored; the batcher keeps no acknowledgement state of its own. Each
item also carries its weight in bytes (ingest.budget), released once its batch is stored.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

from ingest.acks import Ticket
from ingest.stages import Enriched


# Not frozen: a frozen dataclass sets each field through object.__setattr__, which costs a
# message ~0.5 µs here; the item is private to the batcher and never changed after it is made.
@dataclass(slots=True)
class _Item:
    lines: list[str]
    ticket: Ticket | None
    readings: int
    dead_letters: int
    feed: list[Enriched]
    weight: int
    added: float


@dataclass
class Batch:
    lines: list[str] = field(default_factory=list)
    tickets: list[Ticket] = field(default_factory=list)
    readings: int = 0
    dead_letters: int = 0
    feed: list[Enriched] = field(default_factory=list)  # the readings behind the data lines
    weight: int = 0
    oldest: float = 0.0


class Batcher:
    def __init__(self, max_lines: int = 5000, max_age: float = 0.5) -> None:
        self.max_lines = max_lines
        self.max_age = max_age
        self._items: deque[_Item] = deque()
        self._lines = 0
        self._closing = False
        self._lock = threading.Lock()  # `with` on it directly: see ingest.budget
        self._cond = threading.Condition(self._lock)

    # --- MQTT thread ---------------------------------------------------------------------------

    def add(
        self,
        lines: list[str],
        ticket: Ticket | None,
        readings: int,
        dead: int,
        *,
        feed: list[Enriched] | None = None,
        weight: int = 0,
    ) -> None:
        """Queue a message's lines, and the readings behind them (`feed`)."""
        item = _Item(lines, ticket, readings, dead, feed or [], weight, time.monotonic())
        with self._lock:
            first = not self._items
            self._items.append(item)
            self._lines += len(lines)
            # Wake the writer when a batch is full, and when the first item arrives, so that it
            # starts its max_age clock now rather than at the end of an idle wait.
            if first or self._lines >= self.max_lines:
                self._cond.notify()

    # --- writer thread -------------------------------------------------------------------------

    def take(self, timeout: float | None = None) -> Batch | None:
        """The next batch when full or old enough; None on timeout or when closed and empty."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._items and (self._closing or self._ready()):
                    return self._cut()
                if self._closing:
                    return None
                wait = self._wait_time(deadline)
                if wait is not None and wait <= 0:
                    return None
                self._cond.wait(wait)

    def _ready(self) -> bool:
        return self._lines >= self.max_lines or (
            time.monotonic() - self._items[0].added >= self.max_age
        )

    def _wait_time(self, deadline: float | None) -> float | None:
        waits = []
        if self._items:
            waits.append(self._items[0].added + self.max_age - time.monotonic())
        if deadline is not None:
            waits.append(deadline - time.monotonic())
        return max(0.0, min(waits)) if waits else None

    def _cut(self) -> Batch:
        batch = Batch(oldest=self._items[0].added)
        while self._items and len(batch.lines) < self.max_lines:
            item = self._items.popleft()
            batch.lines.extend(item.lines)
            batch.readings += item.readings
            batch.dead_letters += item.dead_letters
            batch.feed.extend(item.feed)
            batch.weight += item.weight
            if item.ticket is not None:
                batch.tickets.append(item.ticket)
        self._lines -= len(batch.lines)
        return batch

    def close(self) -> None:
        """Flush what is left, then make take() return None."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    # --- gauges --------------------------------------------------------------------------------

    def buffered_lines(self) -> float:
        return float(self._lines)

    def oldest_age(self) -> float:
        items = self._items
        return time.monotonic() - items[0].added if items else 0.0
