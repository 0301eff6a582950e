"""Dead letters: every rejected message or reading, kept with its reason, never dropped.

How they are stored is the wire contract wire.deadletters; this stage gives each its timestamp.
"""

from __future__ import annotations

import logging
import threading
import time

from ingest.stages import Rejected
from wire.deadletters import DeadLetter, dead_letter_line

log = logging.getLogger(__name__)

CLOCK_STEP_NS = 1_000_000_000  # a clock stepped back by more than this is logged


class DeadLetterEncoder:
    """Turns rejections into lines with unique timestamps (receive time, made strictly rising)."""

    def __init__(self, max_payload_bytes: int = 8192, worker: str = "") -> None:
        self._max = max_payload_bytes
        self._worker = worker
        self._last_ns = 0
        self._behind = False  # the clock is behind the last letter's time (said once)
        self._lock = threading.Lock()

    def _unique_ns(self) -> int:
        # Two dead letters with the same tags and timestamp would overwrite each other: each is
        # stamped after the last, even when the clock is stepped back. (Following the clock
        # instead overwrote letters: after a step back, new letters fall among the times the
        # old clock already used — at 1,000 letters a second each side of an hour's step,
        # about four collisions; found by a review.) A step back is said once, and
        # `citysense replay` takes letters up to a day ahead of its clock (ingest.replay).
        with self._lock:
            clock = time.time_ns()
            if clock < self._last_ns - CLOCK_STEP_NS and not self._behind:
                log.warning(
                    "the clock went back %.1f s: dead letters are stamped after the last one "
                    "until it catches up",
                    (self._last_ns - clock) / 1e9,
                )
            self._behind = clock < self._last_ns - CLOCK_STEP_NS
            now = max(clock, self._last_ns + 1)
            self._last_ns = now
            return now

    def encode(self, rejected: Rejected, received_ns: int = 0) -> str:
        letter = DeadLetter(
            reason=rejected.reason,
            profile=rejected.profile,
            topic=rejected.topic,
            device_id=rejected.device_id,
            detail=rejected.detail,
            payload=rejected.payload,
            worker=self._worker,
            received_ns=received_ns,
        )
        return dead_letter_line(letter, self._unique_ns(), self._max)
