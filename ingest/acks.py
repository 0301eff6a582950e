"""Acks: which MQTT deliveries this worker holds, and which may be acknowledged once stored.

A packet id names a delivery only for as long as the broker remembers it. A broker that crashes
and restarts from an autosave older than what we hold still presents our session, but has
forgotten the deliveries we hold and hands their packet ids out again for NEW messages. So an id
alone cannot tell a redelivery from a new message, and acknowledging "id 1" after storing the
old message would acknowledge the new one before it is stored.

Each delivery is therefore held with a digest of its topic and payload:
- the same id with the same digest and the DUP flag set is the broker delivering again what we
  hold (after a reconnect): skipped, and acknowledged once, when the held copy is stored;
- the same id with another digest, or without the DUP flag, is a new message reusing a
  forgotten id: it becomes the id's holder, and the older delivery's acknowledgement is voided
  (its data is still stored — the broker no longer has it, so we are its only copy). Why the
  flag: a device sending the same payload again (a lamp saying "on" each minute, stamped with
  its receive time) makes a new message identical to a held one; the broker sets DUP on every
  send after a delivery's first (MQTT 5 §3.3.1.1), so one without it is not a delivery we hold.
  The flag misjudges two cases, both after a broker restarted from a stale save: a held
  message the save says was never sent comes without it (stored twice, not lost); and a new
  message identical to a held one, under its id, queued but cut off by a second disconnect
  before it reached us, comes again with it (Mosquitto sets DUP once a send is queued) and is
  taken for the held one — lost, in a window three coincidences wide, where without the flag
  every such message was;
- a new session (the broker kept nothing) voids every delivery held.

A delivery held across a lost connection is not acknowledged on the next one until the broker
shows it still has it. The broker, if it kept it, sends it again (DUP set) as soon as the
session resumes (MQTT 5 §4.4); one restarted from a stale save may instead have given its id to
a new message already on its way to us. Acknowledged as soon as it was stored, the held one's
acknowledgement would then have acknowledged that new message before we read it: lost, if
this worker stopped before storing it (found by a review; fault 8 stores the held messages only
once the new ones were taken). So a delivery taken on an earlier connection and stored is kept
as stored, its acknowledgement waiting: sent when the broker delivers it again, dropped when a
new message takes its id. Such a record counts as stored, not held (`__len__`).

A `Ticket` travels with its message's lines through the batch to the writer; `settle` acknowledges
the tickets of a stored batch that still hold their ids. This object is the only acknowledgement
state; the MQTT thread takes tickets, the writer thread settles them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass


# Not frozen, and the held record a plain tuple: one of each per message, on the MQTT thread; a
# frozen dataclass's __init__ costs 2-3 times a plain slotted one's (ingest.stages).
@dataclass(slots=True)
class Ticket:
    """One QoS 1/2 delivery awaiting its acknowledgement; never changed once made."""

    mid: int
    qos: int
    serial: int  # unique per delivery in this process: which of an id's deliveries this is


# serial, digest, the connection it was taken on (or last delivered again on), whether stored
_Held = tuple[int, int, int, bool]
Ack = Callable[[int, int], object]


class Acks:
    def __init__(self) -> None:
        self._held: dict[int, _Held] = {}
        self._serial = 0
        self._connection = 0  # counts the connections lost
        self._stored = 0  # records stored whose acknowledgement waits for a delivery again
        self._lock = threading.Lock()
        self.voided = 0  # acknowledgements dropped: their id was reused, or the session lost

    def take(
        self, mid: int, qos: int, topic: str, payload: bytes, dup: bool, *, ack: Ack
    ) -> Ticket | None:
        """A ticket for a new delivery; None if it is a redelivery of one already held (`ack`ed
        at once if that one was stored meanwhile: see the module's doc)."""
        digest = hash((topic, payload))
        with self._lock:
            held = self._held.get(mid)
            if held is not None:
                if held[1] == digest and dup:
                    self._delivered_again(mid, qos, held, ack)
                    return None
                self.voided += 1
                self._stored -= held[3]
            serial = self._serial = self._serial + 1
            self._held[mid] = (serial, digest, self._connection, False)
            return Ticket(mid, qos, serial)

    def again(self, mid: int, topic: str, payload: bytes, dup: bool, *, qos: int, ack: Ack) -> bool:
        """Draining (nothing new is taken): whether this is a redelivery of one held, `ack`ed
        at once if that one was stored (else it would stay unacknowledged when the process
        ends, and be stored again by the next)."""
        digest = hash((topic, payload))
        with self._lock:
            held = self._held.get(mid)
            if held is None or held[1] != digest or not dup:
                return False
            self._delivered_again(mid, qos, held, ack)
            return True

    def _delivered_again(self, mid: int, qos: int, held: _Held, ack: Ack) -> None:
        """Under the lock: the broker still has the delivery `held` (module's doc)."""
        if held[3]:
            del self._held[mid]
            self._stored -= 1
            ack(mid, qos)
        elif held[2] != self._connection:
            self._held[mid] = (held[0], held[1], self._connection, False)

    def settle(
        self, tickets: Iterable[Ticket], ack: Ack, then: Callable[[], object] | None = None
    ) -> int:
        """Acknowledge the stored tickets that still hold their id, taken on this connection,
        then call `then` (which sends them), both before a connection lost meanwhile can be
        counted; how many were acked."""
        acked = 0
        with self._lock:
            for ticket in tickets:
                held = self._held.get(ticket.mid)
                if held is None or held[0] != ticket.serial:
                    continue  # voided when counted, by a reuse of the id or a lost session
                # QoS 2 is exempt: after a reconnect the broker sends its PUBREL again, not the
                # message, so nothing would come to wait for; the PUBCOMP answers that PUBREL.
                if held[2] != self._connection and ticket.qos == 1:
                    if not held[3]:
                        self._held[ticket.mid] = (held[0], held[1], held[2], True)
                        self._stored += 1
                    continue  # until the broker delivers it again (the module's doc)
                del self._held[ticket.mid]
                ack(ticket.mid, ticket.qos)
                acked += 1
            if then is not None:
                then()
        return acked

    def connection_lost(self) -> None:
        """What is held was taken on a connection now gone: see the module's doc."""
        with self._lock:
            self._connection += 1

    def new_session(self) -> None:
        """The broker has no session for us: every id held means nothing any more."""
        with self._lock:
            self.voided += len(self._held)
            self._held.clear()
            self._stored = 0

    @property
    def stored_unconfirmed(self) -> int:
        """Stored, their acknowledgement waiting for the broker to deliver them again."""
        with self._lock:
            return self._stored

    def __len__(self) -> int:
        """Deliveries held and not yet stored. Under the lock: the two counts change in two
        steps, and read between them, the difference was -1 (a ValueError from len())."""
        with self._lock:
            return len(self._held) - self._stored
