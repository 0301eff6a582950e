"""Unknown fields: what devices send that their profile does not declare, kept where operators
see it — counted per (profile, field) on /metrics, logged once per new field, and listed on
/unknown-fields with a device that sent it and a sample value.

A firmware update that adds a field would otherwise lose that field's data without anybody
learning of it. Field names come from devices, so the record is bounded: at most `max_fields`
names are tracked, the rest counted together under `_other` (a device cannot blow up the metric's
label set or this process's memory).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from wire.deadletters import printable

log = logging.getLogger(__name__)

OTHER = "_other"


@dataclass
class Sighting:
    profile: str
    field: str
    device_id: str
    sample: str
    count: int
    first_seen: float
    last_seen: float


class UnknownFields:
    def __init__(self, max_fields: int = 200) -> None:
        self._max = max_fields
        self._seen: dict[tuple[str, str], Sighting] = {}
        self._other: Counter[str] = Counter()
        self._lock = threading.Lock()

    def note(self, profile: str, device_id: str, unknown: tuple[tuple[str, object], ...]) -> None:
        now = time.time()
        with self._lock:
            for name, value in unknown:
                key = (profile, name)
                known = self._seen.get(key)
                if known is not None:
                    known.count += 1
                    known.last_seen = now
                elif len(self._seen) < self._max:
                    field, sample = printable(name, 64), printable(repr(value), 128)
                    self._seen[key] = Sighting(profile, field, device_id, sample, 1, now, now)
                    log.warning(
                        "device %s sent field %r, which profile %s does not declare (stored "
                        "without it; sample %s)",
                        device_id,
                        field,
                        profile,
                        sample,
                    )
                else:
                    self._other[profile] += 1

    def counts(self) -> list[tuple[str, str, int]]:
        """(profile, field, count), `_other` for names past the bound."""
        with self._lock:
            found = [(s.profile, s.field, s.count) for s in self._seen.values()]
            found += [(p, OTHER, n) for p, n in self._other.items()]
        return sorted(found)

    def prometheus(self) -> str:
        family = CounterMetricFamily(
            "citysense_ingest_unknown_fields",
            "Fields devices sent that their profile does not declare, by profile and field",
            labels=["profile", "field"],
        )
        for profile, field, n in self.counts():
            family.add_metric([profile, field], n)
        registry = CollectorRegistry()
        registry.register(_Fixed([family]))
        return generate_latest(registry).decode()

    def sightings(self) -> list[dict[str, object]]:
        with self._lock:
            return [vars(s).copy() for s in sorted(self._seen.values(), key=lambda s: s.field)]


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families
