"""What the machine and the servers did during a timed span, sampled from /proc.

A figure measured on a small machine depends on what else ran: the broker, InfluxDB, the other
workers. A rate alone does not say whether the span was bound by CPU (every core busy) or by
waiting (cores idle). `Sampler` records, every 50 ms, the machine's busy and total CPU time and
the CPU time of named processes; `Sampler.span` gives them between two wall-clock times (the
consumers' own clocks mark a run's start and end).
"""

from __future__ import annotations

import os
import threading
import time
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path

from citysense.children import cpu_seconds

PERIOD = 0.05
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Span:
    seconds: float
    busy_cores: float  # average number of cores busy over the span, of os.cpu_count()
    stolen_cores: float  # of those, taken by the hypervisor for other machines (steal time)
    cpu: dict[str, float]  # CPU seconds of each named process over the span

    def describe(self, readings: int) -> str:
        per = ", ".join(f"{name} {s * 1e6 / readings:.0f}" for name, s in self.cpu.items())
        return (
            f"machine {self.busy_cores:.2f} of {os.cpu_count()} cores busy over "
            f"{self.seconds:.2f} s ({self.stolen_cores:.2f} stolen by the hypervisor); "
            f"servers' CPU µs per reading: {per}"
        )


def _machine() -> tuple[float, float, float]:
    """Busy, stolen and total CPU seconds of the whole machine since boot (/proc/stat's first
    line). Steal is time a virtual CPU was ready to run and the hypervisor ran another machine;
    counted as busy here, as it is not ours to use."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return (total - idle) / _TICK, fields[7] / _TICK, total / _TICK


class Sampler:
    """A daemon thread sampling from `start` until `stop`; samples are kept (a few minutes' run
    is a few thousand tuples)."""

    def __init__(self) -> None:
        self._pids: dict[str, int] = {}
        self._times: list[float] = []
        self._samples: list[tuple[float, float, float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._failed: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self, pids: dict[str, int]) -> None:
        """Sample the machine and the processes `pids` names from now on."""
        self._pids = dict(pids)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            while not self._stop.wait(PERIOD):
                busy, stolen, total = _machine()
                cpu = {name: cpu_seconds(pid) for name, pid in self._pids.items()}
                self._times.append(time.time())
                self._samples.append((busy, stolen, total, cpu))
        except Exception as exc:  # a server gone, /proc unreadable: `span` says so
            self._failed = exc

    def span(self, start: float, end: float) -> Span:
        """Between the samples nearest `start` and `end` (wall-clock seconds)."""
        if self._failed is not None:
            raise RuntimeError("the sampler stopped") from self._failed
        times = list(self._times)  # the thread appends; a copy is consistent for us
        first = self._samples[min(bisect_left(times, start), len(times) - 1)]
        last = self._samples[min(bisect_left(times, end), len(times) - 1)]
        seconds = max(end - start, 1e-9)
        cores = os.cpu_count() or 1
        total = max(last[2] - first[2], 1e-9)
        return Span(
            seconds=seconds,
            busy_cores=(last[0] - first[0]) / total * cores,
            stolen_cores=(last[1] - first[1]) / total * cores,
            cpu={name: last[3][name] - first[3][name] for name in self._pids},
        )
