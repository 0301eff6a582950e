"""Dead letters: every rejected message or reading, kept with its reason, never dropped.

How they are stored is the wire contract wire.deadletters; this stage gives each its timestamp.
"""

from __future__ import annotations

import threading
import time

from ingest.stages import Rejected
from wire.deadletters import DeadLetter, dead_letter_line


class DeadLetterEncoder:
    """Turns rejections into lines with unique timestamps (receive time, made strictly rising)."""

    def __init__(self, max_payload_bytes: int = 8192, worker: str = "") -> None:
        self._max = max_payload_bytes
        self._worker = worker
        self._last_ns = 0
        self._lock = threading.Lock()

    def _unique_ns(self) -> int:
        # Two dead letters with the same tags and timestamp would overwrite each other.
        with self._lock:
            now = max(time.time_ns(), self._last_ns + 1)
            self._last_ns = now
            return now

    def encode(self, rejected: Rejected) -> str:
        letter = DeadLetter(
            reason=rejected.reason,
            profile=rejected.profile,
            topic=rejected.topic,
            device_id=rejected.device_id,
            detail=rejected.detail,
            payload=rejected.payload,
            worker=self._worker,
        )
        return dead_letter_line(letter, self._unique_ns(), self._max)
