"""What the state feed vouches for: which change marks' writes the live state already holds.

The state is complete, by construction, for every write whose change mark (wire.changes) was
read before a load or catch-up from InfluxDB began (`synced`). Beyond that, the feed announces
each write's readings with the marks it stored (wire.statefeed), numbered per publisher. A
window's current mark whose stamp is `synced`, or that the feed brought with no gap before it,
needs no query; any other (a write that was never announced, as a replay; a message lost) moves
its (profile, district) part, to be queried again from that window.

Trust is lost, and every window whose mark moved since `synced` is queried again, when a
message may have been lost: a publisher's number skipping, a publisher first heard of at a
number other than 0, a message the API dropped (far behind), a broker session that did not
survive, a publisher's will (it went away without its final message: what it sent last may be
lost, and no later number would show it). It comes back with the next catch-up that began
after the loss, once it is merged: every write before its marks were read is then held. A
publisher that stops cleanly sends its final number (a message lost before it is a gap) and is
forgotten. Readings written with no mark at all, the periodic full reload
(`api_state_full_reload_interval`) finds.

Bounded: the stamps seen between two catch-ups (`max_seen`; past it, trust is dropped until the
next catch-up, which costs queries, never correctness) and the publishers remembered
(`max_publishers`, the least recently heard forgotten first: one heard again later counts as a
loss).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from wire.changes import split
from wire.statefeed import Message

logger = logging.getLogger(__name__)

Part = tuple[str, str]  # measurement, district
# (measurement, district) -> {window start (ns): its mark's identity (wire.changes.identity)}
Marks = dict[Part, dict[int, int]]

MAX_SEEN = 200_000  # ~25 MB of dict entries at most; ~70 stamps/s at 10,000 readings/s
MAX_PUBLISHERS = 1_000


@dataclass(frozen=True, slots=True)
class Token:
    """Taken before a catch-up reads the marks."""

    epoch: int
    losses: int


@dataclass
class Coverage:
    synced: Marks = field(default_factory=dict)
    max_seen: int = MAX_SEEN
    max_publishers: int = MAX_PUBLISHERS
    trusted: bool = False
    losses: int = 0  # messages known or feared lost since start
    _epoch: int = 0
    _seen: dict[tuple[str, str, int, int], int] = field(default_factory=dict)  # mark -> epoch
    _last: OrderedDict[str, int] = field(default_factory=OrderedDict)  # publisher -> seq

    def take(self, message: Message) -> None:
        """A feed message whose readings are applied to the state."""
        if message.publisher is None:
            return  # an older ingest: its readings are applied, its marks vouch for nothing
        if message.gone:  # its will: what it sent last may be lost, and no number would show it
            self._last.pop(message.publisher, None)
            self.lost(f"publisher {message.publisher} went away without its final message")
            return
        last = self._last.pop(message.publisher, None)
        expected = 0 if last is None else last + 1
        if message.seq < expected:
            # Held already: a message the state came with (a peer replica's, api.live.peer,
            # taken after our subscription began), or one the broker sent twice. Its marks
            # were vouched for, or its loss counted, when it was first taken.
            self._last[message.publisher] = expected - 1
            return
        self._last[message.publisher] = message.seq
        if len(self._last) > self.max_publishers:
            self._last.popitem(last=False)
        if message.last:
            del self._last[message.publisher]  # it sends no more: forgotten, not a loss later
        if message.seq != expected:
            self.lost(
                f"publisher {message.publisher} sent {message.seq} after "
                + ("nothing" if last is None else str(last))
            )
            return
        if not self.trusted:
            return
        if len(self._seen) + len(message.marks) > self.max_seen:
            self.lost(f"more than {self.max_seen} marks announced between two catch-ups")
            return
        for mark in message.marks:
            self._seen[mark] = self._epoch

    def lost(self, why: str) -> None:
        if self.trusted:
            logger.info(
                "state feed may have lost a message (%s): the next catch-up queries "
                "every part whose marks moved",
                why,
            )
        self.trusted = False
        self.losses += 1
        self._seen.clear()

    def begin(self) -> Token:
        """Before a catch-up reads the marks: what it will vouch for once merged."""
        token = Token(self._epoch, self.losses)
        self._epoch += 1
        return token

    def moved(self, current: Marks, since: int) -> dict[Part, int]:
        """Each part with a window at or after `since` whose current mark is neither synced nor
        vouched for by the feed, and the earliest such window."""
        out: dict[Part, int] = {}
        for part, windows in current.items():
            synced = self.synced.get(part, {})
            for window, mark in windows.items():
                held = synced.get(window)
                if window < since or held == mark:
                    continue
                stamp, quiet = split(mark)
                # An unannounced write's quiet stamp (wire.changes) that no read of ours saw:
                # whatever announced write came after it, the feed never brought its readings.
                unread = quiet is not None and (held is None or split(held)[1] != quiet)
                if not unread and self.trusted and (*part, window, stamp) in self._seen:
                    continue
                out[part] = min(out.get(part, window), window)
        return out

    def merged(self, current: Marks, token: Token) -> None:
        """The catch-up that began with `token` and read `current` is merged into the state:
        every write whose mark it read is held. Marks the feed brought before it are no longer
        needed; trust returns if nothing was lost since it began."""
        self.synced = current
        self._seen = {mark: epoch for mark, epoch in self._seen.items() if epoch > token.epoch}
        if self.losses == token.losses and not self.trusted:
            logger.info("state feed trusted again: changes since are taken from it")
            self.trusted = True

    # --- the snapshot's part (api.live.snapshot) --------------------------------------------

    def dump(self) -> dict[str, Any]:
        return {
            "trusted": self.trusted,
            "seen": [list(mark) for mark in self._seen],
            "publishers": [[p, s] for p, s in self._last.items()],
        }

    def load(self, synced: Marks, data: object) -> None:
        """Back to what a snapshot held; anything unexpected restores no trust (and no harm)."""
        self.synced = synced
        if not isinstance(data, dict):
            return
        seen = data.get("seen", [])
        publishers = data.get("publishers", [])
        if not (isinstance(seen, list) and isinstance(publishers, list)):
            return
        self._seen = {
            (m[0], m[1], m[2], m[3]): self._epoch
            for m in seen
            if isinstance(m, list)
            and len(m) == 4
            and all(isinstance(x, str) for x in m[:2])
            and all(isinstance(x, int) for x in m[2:])
        }
        self._last = OrderedDict(
            (p[0], p[1])
            for p in publishers
            if isinstance(p, list)
            and len(p) == 2
            and isinstance(p[0], str)
            and isinstance(p[1], int)
        )
        self.trusted = data.get("trusted") is True
