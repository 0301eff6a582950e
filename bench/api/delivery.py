"""What a live run (bench.api.sse) measured, and its lines in the report: the events each SSE
client should have got and did, their latencies (and ingest's and the API's parts), the CPU used
meanwhile."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.api.constants import S
from bench.api.figures import Report, Timings, idle_seconds, percentiles
from citysense.children import Child
from simulators.publish import PublishReport

Key = tuple[str, int]  # device_id, reading time (ns)


@dataclass(frozen=True)
class LiveRun:
    """One live run, as asked on the command line."""

    clients: int
    rate: float  # readings/s published
    seconds: float
    publishing_devices: int
    filtered: bool  # every other client asks for one district


def want_for(
    keys: set[Key],
    district_of: dict[str, str],
    districts: list[str],
    n: int,
    filtered: bool,
) -> set[Key]:
    """The readings client `n` should get (see bench.api.sse.stream_paths)."""
    district = districts[n % len(districts)] if filtered and n % 2 else None
    return {k for k in keys if district is None or district_of[k[0]] == district}


@dataclass(frozen=True)
class CpuUse:
    wall: float  # seconds
    api: float  # CPU seconds, each
    ingest: float
    clients: float
    own: float  # this process: the publisher and the probe
    idle: float  # the machine's idle time, in seconds of all its CPUs


class CpuMeter:
    """CPU used by the API, ingest, the SSE clients and this process, and how idle the machine
    was, from its creation until `finish`."""

    def __init__(self, *, api: Child, ingest: Child, clients: Child) -> None:
        self.children = (api, ingest, clients)
        self.before = [child.cpu_seconds() for child in self.children]
        self.own = time.process_time()
        self.idle = idle_seconds()
        self.started = time.perf_counter()

    def finish(self) -> CpuUse:
        wall = time.perf_counter() - self.started
        api, ingest, clients = (
            child.cpu_seconds() - before
            for child, before in zip(self.children, self.before, strict=True)
        )
        own = time.process_time() - self.own
        idle = (idle_seconds() - self.idle) / (os.cpu_count() or 1)
        return CpuUse(wall, api, ingest, clients, own, idle)


@dataclass
class Delivery:
    """Every client's events against the readings published."""

    latencies: list[float] = field(default_factory=list)  # reading -> event, every event
    api_part: list[float] = field(default_factory=list)  # state feed message -> event
    ingest_part: list[float] = field(default_factory=list)  # reading -> state feed message
    last_arrival: dict[Key, int] = field(default_factory=dict)  # reading -> its last event
    first_sent: int = 0
    last_event: int = 0
    complete: int = 0  # clients that got every event they should
    missing: int = 0
    duplicates: int = 0
    overflowed: int = 0
    failed: int = 0  # clients whose stream failed or was closed
    delivered: int = 0

    @classmethod
    def judge(
        cls,
        results: list[dict[str, Any]],
        keys: set[Key],
        feed_seen: dict[Key, int],
        want: Callable[[int], set[Key]],
    ) -> Delivery:
        delivery = cls(first_sent=min((k[1] for k in keys), default=0))
        for n, result in enumerate(results):
            delivery.count(result, want(n), keys, feed_seen)
        delivery.ingest_part = [(feed_seen[k] - k[1]) / S for k in keys if k in feed_seen]
        return delivery

    def count(
        self, result: dict[str, Any], want: set[Key], keys: set[Key], feed_seen: dict[Key, int]
    ) -> None:
        """One client's events."""
        got = [(e[0], e[1]) for e in result["events"]]
        seen = set(got)
        self.duplicates += len(got) - len(seen)
        missing = want - seen
        self.missing += len(missing)
        self.complete += not missing
        self.overflowed += bool(result["overflow"])
        self.failed += bool(result["error"]) or bool(result["closed"])
        self.delivered += len(got)
        for device_id, time_ns, arrived in result["events"]:
            key = (device_id, time_ns)
            if key not in keys:
                continue
            self.latencies.append((arrived - time_ns) / S)
            if key in feed_seen:
                self.api_part.append((arrived - feed_seen[key]) / S)
            self.last_arrival[key] = max(self.last_arrival.get(key, 0), arrived)
            self.last_event = max(self.last_event, arrived)

    @property
    def to_all(self) -> list[float]:
        """Reading -> its event at the last client that got it."""
        return [(arrival - k[1]) / S for k, arrival in self.last_arrival.items()]


@dataclass(frozen=True)
class Measured:
    """What one live run measured."""

    published: PublishReport
    publishing: int  # devices that published
    interval: float  # seconds between two readings of one device
    stored: int  # readings ingest stored meanwhile
    expected_events: int  # all clients
    delivery: Delivery
    probe: Timings
    cpu: CpuUse


def report_live(report: Report, run: LiveRun, m: Measured) -> None:
    kind = (
        "half unfiltered, half one district each"
        if run.filtered
        else "each unfiltered (kind=reading)"
    )
    report.section(
        f"Live push: {run.clients} SSE clients ({kind}) while ingest stores {run.rate:g} readings/s"
    )
    _report_delivery(report, run, m)
    _report_latency(report, m)


def _report_delivery(report: Report, run: LiveRun, m: Measured) -> None:
    published, d = m.published, m.delivery
    report.add(
        "published over MQTT (QoS 1), paced",
        f"{published.messages:,} readings in {published.seconds:.1f} s = {published.rate:,.0f}/s",
        f"{m.publishing:,} devices, each every {m.interval:g} s",
    )
    report.add("stored by one ingest worker", f"{m.stored:,} readings")
    span = (d.last_event - d.first_sent) / S if d.last_event else 0.0
    report.add(
        "events delivered (all clients)",
        f"{d.delivered:,} of {m.expected_events:,}",
        f"{d.delivered / span:,.0f} events/s from the first reading to the last event"
        if span
        else "",
    )
    report.add(
        "clients that got every event",
        f"{d.complete} of {run.clients}",
        f"{d.missing:,} events missing, {d.duplicates} duplicates, {d.overflowed} overflowed, "
        f"{d.failed} failed/closed",
    )


def _report_latency(report: Report, m: Measured) -> None:
    d, cpu, wall = m.delivery, m.cpu, m.cpu.wall
    report.add(
        "latency reading (= publish) -> event at a client",
        percentiles(d.latencies),
        f"n={len(d.latencies):,}",
    )
    report.add(
        "  of which ingest: reading -> state feed message",
        percentiles(d.ingest_part),
        f"n={len(d.ingest_part):,} readings",
    )
    report.add(
        "  of which the API: state feed message -> event at a client",
        percentiles(d.api_part),
        f"n={len(d.api_part):,}",
    )
    to_all = d.to_all
    report.add(
        "latency until the last client has it", percentiles(to_all), f"n={len(to_all):,} readings"
    )
    report.timings("GET /devices/{id} every 0.1 s meanwhile", m.probe)
    report.add(
        "CPU during the run (share of one core)",
        f"API {cpu.api / wall:.0%}, ingest {cpu.ingest / wall:.0%}",
        f"SSE clients {cpu.clients / wall:.0%}, publisher and probe {cpu.own / wall:.0%}; "
        f"machine idle {cpu.idle / wall:.0%} over {wall:.1f} s",
    )
