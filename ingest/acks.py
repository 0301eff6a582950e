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


_Held = tuple[int, int]  # serial, digest


class Acks:
    def __init__(self) -> None:
        self._held: dict[int, _Held] = {}
        self._serial = 0
        self._lock = threading.Lock()
        self.voided = 0  # acknowledgements dropped: their id was reused, or the session lost

    def take(self, mid: int, qos: int, topic: str, payload: bytes, dup: bool) -> Ticket | None:
        """A ticket for a new delivery; None if it is a redelivery of one already held."""
        digest = hash((topic, payload))
        with self._lock:
            held = self._held.get(mid)
            if held is not None:
                if held[1] == digest and dup:
                    return None
                self.voided += 1
            serial = self._serial = self._serial + 1
            self._held[mid] = (serial, digest)
            return Ticket(mid, qos, serial)

    def settle(self, tickets: Iterable[Ticket], ack: Callable[[int, int], object]) -> int:
        """Acknowledge the stored tickets that still hold their id; how many were acked."""
        acked = 0
        with self._lock:
            for ticket in tickets:
                held = self._held.get(ticket.mid)
                if held is None or held[0] != ticket.serial:
                    continue  # voided when counted, by a reuse of the id or a lost session
                del self._held[ticket.mid]
                ack(ticket.mid, ticket.qos)
                acked += 1
        return acked

    def new_session(self) -> None:
        """The broker has no session for us: every id held means nothing any more."""
        with self._lock:
            self.voided += len(self._held)
            self._held.clear()

    def __len__(self) -> int:
        return len(self._held)
