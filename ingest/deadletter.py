"""Dead letters: every rejected message or reading, kept with its reason, never dropped.

They go to the measurement `dead_letters` in the same database and the same batch as the data, so
they are acknowledged to the broker only once stored, like everything else. Tags are low
cardinality (reason, profile); the topic, device id, detail and payload are fields. The payload is
bounded and stored as JSON text (UTF-8) or base64 (anything else), so no byte a device sends can
break out of its field.
"""

from __future__ import annotations

import base64
import threading
import time

import orjson

from ingest.encode import line
from ingest.stages import FieldValue, Rejected

MEASUREMENT = "dead_letters"

# Control characters shown as \xNN, as repr() would: readable, and line protocol cannot carry them.
_PRINTABLE = str.maketrans({c: f"\\x{c:02x}" for c in [*range(32), 127]})


def printable(text: str, limit: int = 1024) -> str:
    return text[:limit].translate(_PRINTABLE)


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
        raw = rejected.payload[: self._max]
        try:
            payload = orjson.dumps(raw.decode("utf-8")).decode()
            encoding = "json"
        except UnicodeDecodeError:
            payload = base64.b64encode(raw).decode()
            encoding = "base64"
        values: dict[str, FieldValue] = {
            "topic": printable(rejected.topic),
            "device_id": printable(rejected.device_id),
            "detail": printable(rejected.detail),
            "payload": payload,
            "payload_encoding": encoding,
            "payload_bytes": len(rejected.payload),
            "truncated": len(rejected.payload) > self._max,
        }
        tags = {"reason": rejected.reason.value, "profile": rejected.profile}
        if self._worker:
            tags["worker"] = self._worker
        return line(MEASUREMENT, tags, values, self._unique_ns())
