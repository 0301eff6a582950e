"""Counters of the ingest worker, shared by the MQTT thread and the writer thread.

Rendered as Prometheus text on the worker's /metrics and logged as JSON on exit.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from wire.reasons import Reason

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))


@dataclass
class Stats:
    received: int = 0
    redelivered_skipped: int = 0
    readings_accepted: int = 0
    sentinel_values: int = 0
    readings_stored: int = 0
    dead_letters_stored: int = 0
    messages_acked: int = 0
    batches_written: int = 0
    write_retries: int = 0
    write_seconds: float = 0.0
    spilled_batches: int = 0
    unspooled_batches: int = 0
    # A long-lived thread ended by an unexpected exception: the worker stops being ready and
    # exits non-zero for its supervisor to restart it.
    thread_crashes: int = 0
    # Dead letters of refused lines that InfluxDB refused as well (logged in full; never expected).
    dead_letters_lost: int = 0
    # Histogram of InfluxDB write latency: cumulative counts per upper bound (seconds).
    write_buckets: dict[float, int] = field(
        default_factory=lambda: dict.fromkeys(LATENCY_BUCKETS, 0)
    )
    rejections: Counter[tuple[str, str]] = field(default_factory=Counter)
    # Gauges read at render time from the live components (buffer sizes, oldest unacked age).
    gauges: dict[str, Callable[[], float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def message_taken(self, readings: int) -> None:
        """Per message, from the MQTT thread only: its counters have one writer, so no lock."""
        self.received += 1
        self.readings_accepted += readings

    def add(self, **deltas: float) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def observe_write(self, seconds: float) -> None:
        with self._lock:
            self.write_seconds += seconds
            for bound in LATENCY_BUCKETS:
                if seconds <= bound:
                    self.write_buckets[bound] += 1

    def rejected(self, profile: str, reason: Reason) -> None:
        with self._lock:
            self.rejections[(profile, reason.value)] += 1

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            counters = {
                "received": self.received,
                "redelivered_skipped": self.redelivered_skipped,
                "readings_accepted": self.readings_accepted,
                "sentinel_values": self.sentinel_values,
                "readings_stored": self.readings_stored,
                "dead_letters_stored": self.dead_letters_stored,
                "messages_acked": self.messages_acked,
                "batches_written": self.batches_written,
                "write_retries": self.write_retries,
                "write_seconds": round(self.write_seconds, 3),
                "spilled_batches": self.spilled_batches,
                "unspooled_batches": self.unspooled_batches,
                "thread_crashes": self.thread_crashes,
                "dead_letters_lost": self.dead_letters_lost,
                "rejected": {f"{p}/{r}": n for (p, r), n in sorted(self.rejections.items())},
            }
        counters.update({name: read() for name, read in self.gauges.items()})
        return counters

    def prometheus(self) -> str:
        snap = self.snapshot()
        out: list[str] = []
        for name, value in snap.items():
            if name in ("rejected", "write_seconds"):
                continue
            kind = "gauge" if name in self.gauges else "counter"
            metric = f"citysense_ingest_{name}" + ("_total" if kind == "counter" else "")
            out += [f"# TYPE {metric} {kind}", f"{metric} {value}"]
        out.append("# TYPE citysense_ingest_write_latency_seconds histogram")
        with self._lock:
            buckets = list(self.write_buckets.items())
            total_seconds = self.write_seconds
        for bound, n in buckets:
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'citysense_ingest_write_latency_seconds_bucket{{le="{le}"}} {n}')
        out.append(f"citysense_ingest_write_latency_seconds_sum {total_seconds}")
        out.append(f"citysense_ingest_write_latency_seconds_count {buckets[-1][1]}")
        out.append("# TYPE citysense_ingest_rejected_total counter")
        with self._lock:
            items = sorted(self.rejections.items())
        out += [
            f'citysense_ingest_rejected_total{{profile="{p}",reason="{r}"}} {n}'
            for (p, r), n in items
        ]
        return "\n".join(out) + "\n"
