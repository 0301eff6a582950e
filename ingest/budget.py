"""Budget: the bytes a worker may hold between receiving a message and storing (or spooling) it.

Receive Maximum bounds how many messages the broker lets us hold, not how large they are: at
20,000 messages of 1,000 readings each, a worker would hold ~12 GiB. The MQTT thread acquires a
message's weight before queuing it and waits while the budget is spent; the writer releases a
batch's weight once the batch is stored or spooled. While the MQTT thread waits, paho reads no
more from the socket and the broker keeps the rest: back-pressure, not loss. The waiting thread
still does what keeps the connection (ingest.consume.Consumer.keep_alive), every WAIT_SLICE.
One message heavier than the whole budget is let through alone, so a budget never deadlocks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

# What holding a message costs besides its text, measured with tracemalloc on 1,000-reading
# array messages (ingest/budget.py's weight_of is checked against it in tests/unit).
PER_LINE = 120  # the str object and its list slot
PER_READING = 700  # the reading kept for the state feed: its dataclass and its field dict
WAIT_SLICE = 0.2  # seconds between a waiting thread's looks at give_up, and its `waiting` calls


def weight_of(payload_bytes: int, lines: list[str], readings: int) -> int:
    """Bytes held for one message: its payload until processed, its lines and readings until
    stored."""
    return payload_bytes + sum(map(len, lines)) + PER_LINE * len(lines) + (PER_READING * readings)


class Budget:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._held = 0
        # Taken with `with self._lock` (C-level) once per message; the condition over it is only
        # for waiting, which Condition's own context manager (Python-level) made every acquire
        # pay for.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.waits = 0

    def acquire(
        self, weight: int, give_up: threading.Event, waiting: Callable[[], object] = lambda: None
    ) -> bool:
        """Hold `weight` more bytes, waiting while the budget is spent and calling `waiting`
        (outside the lock) every WAIT_SLICE meanwhile; False (nothing held) if `give_up` is set
        first."""
        waited = False
        while True:
            with self._lock:
                if not self._held or self._held + weight <= self.max_bytes:
                    self._held += weight
                    return True
                if not waited:
                    self.waits += 1
                    waited = True
                if give_up.is_set():
                    return False
                self._cond.wait(WAIT_SLICE)
            waiting()

    def release(self, weight: int) -> None:
        with self._lock:
            self._held -= weight
            self._cond.notify_all()

    @property
    def held(self) -> int:
        return self._held
