"""Dead letters as stored: every rejected message or reading, kept with its reason, never dropped.

Measurement `dead_letters`, in the same database and the same batch as the data, so a rejection is
acknowledged to the broker only once stored, like everything else. Tags are low cardinality
(`reason`, `profile`, `worker`); the topic, device id, detail and payload are fields. The payload
is bounded and stored as JSON text (`payload_encoding=json`: UTF-8 as received) or base64
(anything else), so no byte a device sends can break out of its field. `received_ns`, when known,
is when ingest received the message: a replay stamps a reading without a timestamp with it, so
that the part of it stored at the time (the drop-field policy) is written again, not added
under the letter's own later time. `citysense replay` merges `replayed_at` and `replay_result`
onto a dead letter it retried.

Ingest writes them (ingest.deadletter), replay reads and marks them (ingest.replay), the API
serves them (api.compute.dead_letters); all three speak of them through this module.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Literal

import orjson

from wire.lineproto import FieldValue, line
from wire.reasons import Reason

MEASUREMENT = "dead_letters"
TAGS = ("reason", "profile", "worker")
UNKNOWN_PROFILE = "unknown"  # the profile tag of a message whose topic names no known profile

# Control characters shown as \xNN, as repr() would: readable, and line protocol cannot carry them.
_PRINTABLE = str.maketrans({c: f"\\x{c:02x}" for c in [*range(32), 127]})

Encoding = Literal["json", "base64"]


def printable(text: str, limit: int = 1024) -> str:
    return text[:limit].translate(_PRINTABLE)


def encode_payload(raw: bytes) -> tuple[str, Encoding]:
    """The payload as a field value: a JSON string literal of UTF-8 text, else base64."""
    try:
        return orjson.dumps(raw.decode("utf-8")).decode(), "json"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode(), "base64"


def decode_payload(payload: str, encoding: object) -> bytes | None:
    """The bytes `encode_payload` stored; None when they cannot be had back."""
    if encoding == "base64":
        return base64.b64decode(payload)
    text = orjson.loads(payload)
    return text.encode() if isinstance(text, str) else None


def payload_text(payload: str, encoding: object) -> tuple[str, Literal["text", "base64"]]:
    """What a reader is shown: the text as received when it was UTF-8, base64 otherwise."""
    if encoding != "json":
        return payload, "base64"
    # Stored as a JSON string literal so any text survives line protocol; undo that.
    try:
        text = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload, "text"
    return (text, "text") if isinstance(text, str) else (payload, "text")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: Reason
    profile: str
    topic: str
    device_id: str
    detail: str
    payload: bytes
    worker: str = ""
    received_ns: int = 0  # when ingest received the message (0: not known)


def dead_letter_line(letter: DeadLetter, time_ns: int, max_payload_bytes: int = 8192) -> str:
    raw = letter.payload[:max_payload_bytes]
    payload, encoding = encode_payload(raw)
    values: dict[str, FieldValue] = {
        "topic": printable(letter.topic),
        "device_id": printable(letter.device_id),
        "detail": printable(letter.detail),
        "payload": payload,
        "payload_encoding": encoding,
        "payload_bytes": len(letter.payload),
        "truncated": len(letter.payload) > max_payload_bytes,
    }
    if letter.received_ns:
        values["received_ns"] = letter.received_ns
    tags = {"reason": letter.reason.value, "profile": letter.profile, "worker": letter.worker}
    return line(MEASUREMENT, tags, values, time_ns)


def replay_mark_line(tags: dict[str, str], result: str, replayed_ns: int, time_ns: int) -> str:
    """What replay merges onto the dead letter stored at `time_ns` with `tags`."""
    values: dict[str, FieldValue] = {"replayed_at": replayed_ns, "replay_result": result}
    return line(MEASUREMENT, tags, values, time_ns)
