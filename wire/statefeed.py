"""The state feed: what ingest announces after each stored batch, for the API's live state.

Topic `<root>/_ingested/<client_id>` (wire.topics), QoS 0. Each message is a JSON object
`{"readings": [{"profile", "device_id", "district", "time", "values"}, ...], "publisher", "seq",
"marks"}` of at most `CHUNK` readings, `profile` being the profile's measurement and `time` the
reading's time in ns. Only readings InfluxDB has stored are announced, and they are announced
before their messages are acknowledged (a crash in between redelivers them: announced again).

What lets a reader trust the feed instead of querying InfluxDB again (api.live.coverage):
- `publisher` names one run of one writer and `seq` numbers its messages from 0 without gaps,
  so a reader sees when a message was lost (a broker's full queue, a disconnection);
- `marks`, on the last message of a write, are the change marks (wire.changes) that write
  stored, as `[measurement, district, window start ns, stamp]`: a mark whose stamp a reader got
  from the feed, with no gap before it, announced readings the reader already holds; a stamp it
  never got (a writer that does not announce, as replay, or a message lost) says which part to
  query again;
- `"last": true` marks a run's final message, sent when the writer stops cleanly: its number
  is the run's last, so a message lost just before it is a gap still, and the reader forgets
  the publisher;
- a writer that goes away otherwise (killed, its connection lost for longer than its will's
  delay) leaves the broker its will, `{"readings": [], "publisher": …, "gone": true}`, not
  numbered: whatever it sent last may have been lost, and nothing else would ever show it.
Messages without them (an older ingest) are applied, and trusted for nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

CHUNK = 500  # readings per message: well under the broker's packet limit


class Stored(Protocol):
    """A stored reading as ingest holds it (ingest.stages.Enriched)."""

    @property
    def measurement(self) -> str: ...
    @property
    def device_id(self) -> str: ...
    @property
    def district(self) -> str: ...
    @property
    def time_ns(self) -> int: ...
    @property
    def fields(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class StoredReading:
    """A `Stored` made from plain values, for a writer that holds no ingest.stages.Enriched (the
    tests and benchmarks that announce as ingest does): one shape, so that a field added to
    `Stored` is added here once."""

    measurement: str
    device_id: str
    district: str
    time_ns: int
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Announced:
    """A reading as the API receives it from the feed."""

    profile: str
    device_id: str
    district: str
    time_ns: int
    values: dict[str, Any]


Mark = tuple[str, str, int, int]  # measurement, district, window start (ns), stamp


@dataclass(frozen=True, slots=True)
class Message:
    """One feed message as the API receives it."""

    readings: list[Announced]
    publisher: str | None = None  # None: an older ingest, which does not number its messages
    seq: int = 0
    marks: tuple[Mark, ...] = ()
    last: bool = False  # the publisher's final message: it stopped cleanly
    gone: bool = False  # its will: it went away without a final message (seq means nothing)


def encode(
    readings: Sequence[Stored],
    chunk: int = CHUNK,
    *,
    marks: Sequence[Mark] = (),
    publisher: str | None = None,
    seq: Iterator[int] | None = None,
    last: bool = False,
) -> Iterator[bytes]:
    """The feed messages announcing `readings`, `chunk` at a time, the last one with `marks`
    (one message with no readings if there are marks only, or it is the `last`); each
    numbered by `seq` when a `publisher` is given."""
    starts = list(range(0, len(readings), chunk)) or ([0] if marks or last else [])
    for start in starts:
        body: dict[str, Any] = {
            "readings": [
                {
                    "profile": r.measurement,
                    "device_id": r.device_id,
                    "district": r.district,
                    "time": r.time_ns,
                    "values": r.fields,
                }
                for r in readings[start : start + chunk]
            ]
        }
        if start == starts[-1] and marks:
            body["marks"] = [list(m) for m in marks]
        if start == starts[-1] and last:
            body["last"] = True
        if publisher is not None and seq is not None:
            body["publisher"] = publisher
            body["seq"] = next(seq)
        yield orjson.dumps(body)


def farewell(publisher: str) -> bytes:
    """The will a publisher leaves the broker when it connects (see the module's doc)."""
    return orjson.dumps({"readings": [], "publisher": publisher, "gone": True})


def decode(payload: bytes) -> Message:
    """One feed message; items of another shape are skipped (a newer ingest may announce more
    than this reader knows). ValueError if the message is not JSON."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        return Message([])
    items = body.get("readings")
    readings = (
        [reading for item in items if (reading := _announced(item)) is not None]
        if isinstance(items, list)
        else []
    )
    publisher, seq = body.get("publisher"), body.get("seq")
    if isinstance(publisher, str) and body.get("gone") is True:
        return Message([], publisher, -1, gone=True)
    if not isinstance(publisher, str) or not isinstance(seq, int) or isinstance(seq, bool):
        return Message(readings)
    marks = tuple(_marks(body.get("marks")))
    return Message(readings, publisher, seq, marks, last=body.get("last") is True)


def _marks(items: object) -> Iterator[Mark]:
    if not isinstance(items, list):
        return
    for item in items:
        if (
            isinstance(item, list)
            and len(item) == 4
            and isinstance(item[0], str)
            and isinstance(item[1], str)
            and all(isinstance(x, int) and not isinstance(x, bool) for x in item[2:])
        ):
            yield item[0], item[1], item[2], item[3]


def _announced(item: object) -> Announced | None:
    if not isinstance(item, dict):
        return None
    device_id, profile, time_ns, values = (
        item.get("device_id"),
        item.get("profile"),
        item.get("time"),
        item.get("values"),
    )
    if (
        isinstance(device_id, str)
        and isinstance(profile, str)
        and isinstance(time_ns, int)
        and isinstance(values, dict)
    ):
        district = item.get("district")
        return Announced(
            profile, device_id, district if isinstance(district, str) else "", time_ns, values
        )
    return None
