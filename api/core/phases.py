"""Where an answer's time went, phase by phase, as an HTTP `Server-Timing` header value
(W3C Server Timing: `name;dur=<ms>`): an operator's browser shows it, and bench.api_bench
reports it, so a slow answer says whether InfluxDB or the API spent the time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass(slots=True)
class Phases:
    """Seconds per named phase, summed when a phase runs more than once; in first-run order."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - started
            self.seconds[name] = self.seconds.get(name, 0.0) + spent

    def header(self) -> str:
        """`marks;dur=3.1, compute;dur=0.4`: milliseconds, one decimal."""
        return ", ".join(f"{name};dur={s * 1000:.1f}" for name, s in self.seconds.items())
