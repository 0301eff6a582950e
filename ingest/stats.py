"""Counters of the ingest worker, shared by the MQTT thread and the writer thread.

Rendered as Prometheus text on the worker's /metrics and logged as JSON on exit.
"""

from __future__ import annotations

import math
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

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
    connections: int = 0  # CONNACKs: the first connection and every reconnection
    # Dead letters of refused lines that InfluxDB refused as well (logged in full; never expected).
    dead_letters_lost: int = 0
    # Latest rows (wire.latest) InfluxDB refused (logged; never expected: their keys are typed).
    latest_rows_refused: int = 0
    # Writes whose readings went without their rows, each followed by an owed mark (wire.latest):
    # a keeper off (no `latest` policy) or a row refused; the API's starts read the readings.
    latest_rows_owed: int = 0
    # Owed marks InfluxDB refused (logged in full; never expected): an API may take the rows
    # for whole without those readings' rows until its next full reload.
    latest_owed_lost: int = 0
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
                "connections": self.connections,
                "dead_letters_lost": self.dead_letters_lost,
                "latest_rows_refused": self.latest_rows_refused,
                "latest_rows_owed": self.latest_rows_owed,
                "latest_owed_lost": self.latest_owed_lost,
                "rejected": {f"{p}/{r}": n for (p, r), n in sorted(self.rejections.items())},
            }
        counters.update({name: read() for name, read in self.gauges.items()})
        return counters

    def prometheus(self) -> str:
        """Prometheus text exposition (prometheus_client), with HELP and TYPE lines."""
        registry = CollectorRegistry()
        registry.register(_StatsCollector(self))
        # process_start_time_seconds and the rest: an alert counts a worker's restarts by it.
        ProcessCollector(registry=registry)
        return generate_latest(registry).decode()


# What each metric means, for its HELP line; a counter or gauge without one says so.
HELP = {
    "received": "MQTT messages taken from the broker",
    "redelivered_skipped": "Deliveries of messages already held, skipped (acked once stored)",
    "readings_accepted": "Readings that passed validation",
    "sentinel_values": "Values a device sent to mean no data, left out",
    "readings_stored": "Readings InfluxDB stored",
    "dead_letters_stored": "Dead letters InfluxDB stored",
    "messages_acked": "Messages acknowledged to the broker after their batch was stored",
    "batches_written": "Batches written to InfluxDB",
    "write_retries": "InfluxDB writes retried",
    "spilled_batches": "Batches spooled to disk while InfluxDB was away",
    "unspooled_batches": "Spooled batches written to InfluxDB",
    "thread_crashes": "Long-lived threads ended by an unexpected exception",
    "connections": "Connections the broker accepted: the first, and each reconnection",
    "dead_letters_lost": "Dead letters InfluxDB refused too (logged in full)",
    "latest_rows_refused": (
        "Rows of devices' newest readings InfluxDB refused (logged), not for a missing policy"
    ),
    "latest_rows_owed": "Writes whose readings went without their latest rows (an owed mark each)",
    "latest_owed_lost": "Owed marks InfluxDB refused (logged in full)",
    "latest_rows": "Devices whose newest reading the writer thread's rows hold",
    "clock_offset_seconds": "This host's clock minus InfluxDB's at its last answer (NaN: none)",
    "last_stored_timestamp_seconds": "Unix time a batch was last stored in InfluxDB (0: none yet)",
    "buffered_lines": "Lines waiting for the next batch",
    "unacked_messages": "Messages held, not yet acknowledged",
    "acks_voided": "Acknowledgements dropped: the broker reused their id or lost the session",
    "held_bytes": "Bytes held between receiving messages and storing them",
    "held_bytes_limit": "The byte budget (CITYSENSE_MAX_HELD_BYTES)",
    "budget_waits": "Times the MQTT thread waited for room in the byte budget",
    "oldest_unacked_seconds": "Age of the oldest message not yet acknowledged",
    "ready": "1 while no thread of the worker has died",
    "subscribed": "1 while the broker grants the worker's subscription (always, when retiring)",
    "registry_broken": "1 while the registry file changed and does not load (the old one serves)",
    "spool_bytes": "Bytes in the disk spool",
    "spool_corrupt_segments": "Spool segments found damaged and moved aside",
    "spool_refused_appends": "Batches the spool's disk refused (a write failed)",
    "spool_bytes_limit": "The spool's bound (CITYSENSE_SPOOL_MAX_BYTES)",
    "cpu_seconds_mqtt_thread": "CPU time of paho's network thread: reading, the pipeline, queuing",
    "cpu_seconds_writer_thread": "CPU time of the writer thread: writes, acknowledgements, feed",
}


def thread_cpu_seconds(native_id: int | None) -> float:
    """CPU time (user + system) of one thread of this process, from Linux's /proc; 0 before
    the thread started, NaN where it cannot be read (another system, or the thread ended)."""
    if native_id is None:
        return 0.0
    try:
        stat = Path(f"/proc/self/task/{native_id}/stat").read_text()
    except OSError:
        return math.nan
    # After the name in parentheses (which may hold spaces): state is field 3, utime 14, stime 15.
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _StatsCollector(Collector):
    def __init__(self, stats: Stats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        for name, value in stats.snapshot().items():
            if name in ("rejected", "write_seconds") or not isinstance(value, int | float):
                continue
            metric = f"citysense_ingest_{name}"
            text = HELP.get(name, name.replace("_", " "))
            if name in stats.gauges:
                yield GaugeMetricFamily(metric, text, value=value)
            else:
                yield CounterMetricFamily(metric, text, value=value)
        with stats._lock:
            buckets = list(stats.write_buckets.items())
            total = stats.write_seconds
            rejections = sorted(stats.rejections.items())
        yield HistogramMetricFamily(
            "citysense_ingest_write_latency_seconds",
            "InfluxDB write latency",
            buckets=[("+Inf" if b == float("inf") else repr(b), n) for b, n in buckets],
            sum_value=total,
        )
        rejected = CounterMetricFamily(
            "citysense_ingest_rejected",
            "Messages or readings rejected, by profile and reason",
            labels=["profile", "reason"],
        )
        for (profile, reason), n in rejections:
            rejected.add_metric([profile, reason], n)
        yield rejected
