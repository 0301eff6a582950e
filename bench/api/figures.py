"""Figures and their report: request timings, percentiles, the table printed at the end, and the
machine the figures were measured on."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.machine import machine_seconds


@dataclass
class Timings:
    seconds: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # requests that failed (not timed)

    def add(self, seconds: float, size: int = 0) -> None:
        self.seconds.append(seconds)
        self.sizes.append(size)


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def percentiles(values: Sequence[float]) -> str:
    if not values:
        return "none"
    return f"p50 {ms(pct(values, 50))}  p99 {ms(pct(values, 99))}  max {ms(max(values))}"


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def section(self, title: str) -> None:
        self.rows.append((title, "", ""))

    def add(self, what: str, figure: str, note: str = "") -> None:
        self.rows.append(("  " + what, figure, note))
        print(f"  {what}: {figure}  {note}".rstrip(), flush=True)

    def timings(self, what: str, t: Timings, note: str = "") -> None:
        s = t.seconds
        if t.errors:
            note = f"{len(t.errors)} FAILED: {t.errors[0]}" + (f"; {note}" if note else "")
        if not s:
            self.add(what, "no successful request", note)
            return
        size = statistics.mean(t.sizes) if t.sizes else 0
        figure = f"p50 {ms(pct(s, 50))}  p99 {ms(pct(s, 99))}  max {ms(max(s))}  n={len(s)}"
        extra = (
            f"{size / 1e6:,.1f} MB/response"
            if size >= 1e6
            else (f"{size / 1e3:,.1f} kB/response" if size else "")
        )
        self.add(what, figure, "; ".join(x for x in (extra, note) if x))

    def print(self) -> None:
        width = max(len(r[0]) for r in self.rows) + 2
        fig = max(len(r[1]) for r in self.rows) + 2
        print("\n" + "=" * (width + fig + 40))
        for what, figure, note in self.rows:
            if not figure:
                print(f"\n{what}")
            else:
                print(f"{what:<{width}}{figure:<{fig}}{note}")
        print("=" * (width + fig + 40), flush=True)


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024**2:.0f} GiB RAM"
    return f"{os.cpu_count()} CPUs ({model}){mem}, Python {platform.python_version()}"


def idle_seconds() -> float:
    """Idle CPU time of the whole machine since boot, idle and iowait (bench.machine)."""
    busy, _, total = machine_seconds()
    return total - busy
