"""The state feed: what ingest announces after each stored batch, for the API's live state.

Topic `<root>/_ingested/<client_id>` (wire.topics), QoS 0: the API rebuilds from InfluxDB what it
misses (start-up load, reconcile), so the feed only has to be fast. Each message is a JSON object
`{"readings": [{"profile", "device_id", "district", "time", "values"}, ...]}` of at most
`CHUNK` readings, `profile` being the profile's measurement and `time` the reading's time in ns.
Only readings InfluxDB has stored are announced.
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
class Announced:
    """A reading as the API receives it from the feed."""

    profile: str
    device_id: str
    district: str
    time_ns: int
    values: dict[str, Any]


def encode(readings: Sequence[Stored], chunk: int = CHUNK) -> Iterator[bytes]:
    """The feed messages announcing `readings`, `chunk` at a time."""
    for start in range(0, len(readings), chunk):
        yield orjson.dumps(
            {
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
        )


def decode(payload: bytes) -> list[Announced]:
    """The readings of one feed message; items of another shape are skipped (a newer ingest
    may announce more than this reader knows). ValueError if the message is not JSON."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    items = body.get("readings") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return []
    return [reading for item in items if (reading := _announced(item)) is not None]


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
