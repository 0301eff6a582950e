"""Dedupe: recognise a reading this worker already accepted, by series and device timestamp.

A device resending a reading (firmware retry, gateway replay) gets it dead-lettered as
`duplicate` instead of silently rewriting the same point; a different reading under an already
used timestamp is `timestamp_conflict`, since storing it would overwrite the first. The memory is
bounded: the oldest remembered fall out first, and are then rewritten idempotently.

Per worker: with a shared subscription, two copies landing on two workers are both written, to
the same point, so storage stays exactly once; only the dead letter is missing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict


class Seen:
    def __init__(self, capacity: int = 200_000) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[tuple[str, str, int], int] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, measurement: str, device_id: str, time_ns: int, fields: str) -> str | None:
        """None for a new reading (now remembered); "duplicate" or "conflict" otherwise.

        `fields`: the reading's fields as line protocol in its profile's declared order (what
        ingest.compiled encodes; ReadingEncoder.fields_in_order for the other path), so the
        same whatever the payload's key order or timestamp form. Its hash is the digest: 0.1 µs
        for the text already made, against 0.7 µs for the frozenset of the fields' items this
        hashed before (timeit, a power meter's 11 fields)."""
        if self._capacity == 0:
            return None
        key = (measurement, device_id, time_ns)
        digest = hash(fields)
        with self._lock:
            known = self._entries.get(key)
            if known is not None:
                return "duplicate" if known == digest else "conflict"
            self._entries[key] = digest
            if len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        return None

    def forget(self, measurement: str, device_id: str, time_ns: int) -> None:
        """A reading InfluxDB refused was not stored after all."""
        with self._lock:
            self._entries.pop((measurement, device_id, time_ns), None)

    def __len__(self) -> int:
        return len(self._entries)
