"""Batch: gather the lines of many messages into one write, by size and by age.

The batcher also keeps the MQTT bookkeeping that makes acknowledge-after-store safe:
- a message's lines never straddle two batches, so its ack follows the write of all of them;
- the packet ids it holds are remembered, so a copy the broker redelivers after a reconnect is
  skipped rather than acknowledged twice (a second ack could acknowledge a new message that
  reused the id before it was stored);
- a session epoch: if the broker lost our session, ids from before mean nothing and their acks
  are dropped (the data is still written; the broker will not resend it).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ingest.changes import Change
from ingest.stages import Enriched


@dataclass(frozen=True, slots=True)
class Pending:
    """An MQTT message awaiting acknowledgement."""

    mid: int
    qos: int
    epoch: int


@dataclass(frozen=True, slots=True)
class _Item:
    lines: list[str]
    pending: Pending | None
    readings: int
    dead_letters: int
    feed: list[Enriched]
    changes: set[Change]
    added: float


@dataclass
class Batch:
    lines: list[str] = field(default_factory=list)
    pending: list[Pending] = field(default_factory=list)
    readings: int = 0
    dead_letters: int = 0
    feed: list[Enriched] = field(default_factory=list)
    changes: set[Change] = field(default_factory=set)
    oldest: float = 0.0


class Batcher:
    def __init__(self, max_lines: int = 5000, max_age: float = 0.5) -> None:
        self.max_lines = max_lines
        self.max_age = max_age
        self._items: deque[_Item] = deque()
        self._lines = 0
        self._held: set[int] = set()
        self._epoch = 0
        self._closing = False
        self._cond = threading.Condition()

    # --- MQTT thread ---------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self._epoch

    def add(
        self,
        lines: list[str],
        pending: Pending | None,
        readings: int,
        dead: int,
        *,
        feed: list[Enriched] | None = None,
        changes: set[Change] | None = None,
    ) -> bool:
        """Queue a message's lines; False (and nothing queued) if it is a redelivery we hold."""
        with self._cond:
            if pending is not None and pending.epoch == self._epoch:
                if pending.mid in self._held:
                    return False
                self._held.add(pending.mid)
            first = not self._items
            self._items.append(
                _Item(
                    lines, pending, readings, dead, feed or [], changes or set(), time.monotonic()
                )
            )
            self._lines += len(lines)
            # Wake the writer when a batch is full, and when the first item arrives, so that it
            # starts its max_age clock now rather than at the end of an idle wait.
            if first or self._lines >= self.max_lines:
                self._cond.notify()
            return True

    def new_session(self) -> None:
        """The broker has no session for us: held packet ids are void from here on."""
        with self._cond:
            self._epoch += 1
            self._held.clear()

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
            batch.changes |= item.changes
            if item.pending is not None:
                batch.pending.append(item.pending)
        self._lines -= len(batch.lines)
        return batch

    def acknowledge(self, batch: Batch, ack: Callable[[int, int], object]) -> int:
        """Ack a stored batch's messages of the current session; returns how many were acked."""
        acked = 0
        with self._cond:
            for pending in batch.pending:
                if pending.epoch != self._epoch:
                    continue
                self._held.discard(pending.mid)
                ack(pending.mid, pending.qos)
                acked += 1
        return acked

    def close(self) -> None:
        """Flush what is left, then make take() return None."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    # --- gauges --------------------------------------------------------------------------------

    def buffered_lines(self) -> float:
        return float(self._lines)

    def held_messages(self) -> float:
        return float(len(self._held))

    def oldest_age(self) -> float:
        items = self._items
        return time.monotonic() - items[0].added if items else 0.0
