"""What the machine and its processes did during a timed span, sampled from /proc.

A figure measured on a small machine depends on what else ran: the broker, InfluxDB, the other
workers, and anything that is not the benchmark's at all. A rate alone does not say whether the
span was bound by CPU (every core busy) or by waiting (cores idle), nor whether something else
took the CPU: `Sampler` records, every 50 ms, the machine's busy, stolen and total CPU time and
the CPU time of the processes it watches, in named groups; `Sampler.span` gives them between
two wall-clock times (the consumers' own clocks mark a run's start and end), with the rest of
the machine's busy time apart: a run whose rest is large ran on a machine that was not quiet.
(Two runs of bench.throughput made while a profiler sampled the workers measured 0.62x and
0.66x where the others measured 1.0-1.1x; nothing in their figures said why.)
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from pathlib import Path

from citysense.children import process_times

PERIOD = 0.05
_TICK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
NOT_QUIET = 0.1  # cores of the rest of the machine over which a span is said to be disturbed


@dataclass(frozen=True, slots=True)
class Span:
    seconds: float
    busy_cores: float  # average number of cores busy over the span, of CORES
    stolen_cores: float  # of those, taken by the hypervisor for other machines (steal time)
    cpu: dict[str, float]  # CPU seconds of each watched group over the span

    @property
    def rest_cores(self) -> float:
        """Cores busy on average with what no watched group accounts for (other programs,
        the kernel's own threads, steal)."""
        return self.busy_cores - sum(self.cpu.values()) / self.seconds

    def describe(self, readings: int) -> str:
        per = ", ".join(f"{name} {s * 1e6 / readings:.0f}" for name, s in self.cpu.items())
        rest = self.rest_cores * self.seconds * 1e6 / readings
        warn = "  NOT QUIET: the figure is disturbed" if self.rest_cores > NOT_QUIET else ""
        return (
            f"machine {self.busy_cores:.2f} of {CORES} cores busy over {self.seconds:.2f} s "
            f"({self.stolen_cores:.2f} stolen by the hypervisor); CPU µs per reading: {per}, "
            f"rest of the machine {rest:.0f}{warn}"
        )


def machine_seconds() -> tuple[float, float, float]:
    """Busy, stolen and total CPU seconds of the whole machine since boot (/proc/stat's first
    line). Steal is time a virtual CPU was ready to run and the hypervisor ran another machine;
    counted as busy here, as it is not ours to use."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return (total - idle) / _TICK, fields[7] / _TICK, total / _TICK


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float  # wall clock
    busy: float
    stolen: float
    total: float
    cpu: dict[str, float]  # per group


class Sampler:
    """A daemon thread sampling from `start` until `stop`; samples are kept (a few minutes' run
    is a few thousand of them)."""

    def __init__(self) -> None:
        self._groups: dict[str, list[int]] = {}
        # A process's start and CPU at its last reading: kept once it is gone, or once its pid
        # is another process's (pids wrap at pid_max, 32,768 by default).
        self._last: dict[int, tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._times: list[float] = []
        self._samples: list[_Sample] = []
        self._stop = threading.Event()
        self._failed: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def watch(self, group: str, pid: int) -> None:
        """Count process `pid` in `group` from the next sample on (a group counts from zero
        before its first process is watched: watch before the span begins)."""
        with self._lock:
            self._groups.setdefault(group, []).append(pid)

    def start(self) -> None:
        self.watch("this benchmark", os.getpid())
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join()

    def _run(self) -> None:
        try:
            while not self._stop.wait(PERIOD):
                self._sample()
        except Exception as exc:  # /proc unreadable: `span` says so
            self._failed = exc

    def _sample(self) -> None:
        busy, stolen, total = machine_seconds()
        with self._lock:
            groups = {name: list(pids) for name, pids in self._groups.items()}
        cpu = {name: sum(self._read(pid) for pid in pids) for name, pids in groups.items()}
        sample = _Sample(time.time(), busy, stolen, total, cpu)
        self._samples.append(sample)
        self._times.append(sample.at)  # after the sample: `span` indexes samples by it

    def _read(self, pid: int) -> float:
        """The CPU of the process first seen as `pid`; what it was at its last reading once it
        is gone (what it used after that reading is lost to the rest of the machine)."""
        known = self._last.get(pid)
        with contextlib.suppress(OSError):  # exited
            started, cpu = process_times(pid)
            if known is None or known[0] == started:
                known = self._last[pid] = (started, cpu)
        return 0.0 if known is None else known[1]

    def span(self, start: float, end: float) -> Span:
        """From the last sample at or before `start` to the first at or after `end` (wall-clock
        seconds): the span itself and up to a period either side. Waits for that sample."""
        deadline = time.monotonic() + 10 * PERIOD
        while not self._times or self._times[-1] < end:
            if self._failed is not None:
                raise RuntimeError("the sampler stopped") from self._failed
            if time.monotonic() > deadline:
                raise RuntimeError(f"no sample after {end:.3f} within {10 * PERIOD:.1f} s")
            time.sleep(PERIOD / 2)
        times = list(self._times)
        before = bisect_right(times, start) - 1
        if before < 0:
            raise RuntimeError(f"no sample before {start:.3f}: started too late")
        first = self._samples[before]
        last = self._samples[bisect_left(times, end)]
        seconds = max(last.at - first.at, 1e-9)
        total = max(last.total - first.total, 1e-9)
        return Span(
            seconds=seconds,
            busy_cores=(last.busy - first.busy) / total * CORES,
            stolen_cores=(last.stolen - first.stolen) / total * CORES,
            cpu={name: cpu - first.cpu.get(name, 0.0) for name, cpu in last.cpu.items()},
        )
