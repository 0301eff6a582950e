"""Child processes of the application: `citysense <subcommand>` (or any Python module) started
in a session of its own and dying with its parent, its output in a log file; awaited until ready
(a line in its log, an HTTP URL answering 200, any check) with a deadline; stopped with SIGTERM,
then SIGKILL; measured from /proc (CPU time, resident memory).

Used by `citysense up` and by the benchmarks in bench/. The servers (Mosquitto, InfluxDB) have
their own in citysense.servers.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from common.process import die_with_parent

T = TypeVar("T")

TAIL_CHARS = 3000


class Exited(RuntimeError):
    """A child exited while it was awaited."""


class NotReady(RuntimeError):
    """What was awaited did not happen before the deadline."""


def module_argv(module: str, *args: str) -> list[str]:
    """`python -m module args...` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def log_tail(log: Path | None, chars: int = TAIL_CHARS) -> str:
    if log is None or not log.exists():
        return "(no log)"
    return log.read_text(errors="replace")[-chars:]


@functools.cache
def _local_client() -> httpx.Client:
    """One client for every look at a local process, kept for the process's life.

    `httpx.get` builds a client per call, and with it a TLS context loaded with the CA bundle
    even for plain HTTP: 21.7 ms of CPU a call here, against 0.16 ms through a kept client
    (twenty calls each, measured by hand). A readiness poll every 0.1 s so spent a fifth of a
    core, and bench.throughput's polls of the workers' /metrics competed with the very workers
    it timed. No connection is kept alive: a look after a restart on the same port must not
    go down a connection to the process that was there before."""
    return httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))


def get_local(url: str, timeout: float = 5.0) -> httpx.Response:
    """GET `url` of a local process (readiness, metrics) through the kept client; raises
    httpx.HTTPError as httpx.get would. Safe from any thread (httpx's pool locks)."""
    return _local_client().get(url, timeout=timeout)


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """Whether `url` answers 200 now; any transport error is a no."""
    try:
        return get_local(url, timeout).status_code == 200
    except httpx.HTTPError:
        return False


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process used so far (/proc/PID/stat)."""
    return process_times(pid)[1]


def process_times(pid: int) -> tuple[int, float]:
    """When the process started (clock ticks since boot: with the pid, which process it is) and
    the user and system CPU time it used so far (/proc/PID/stat); OSError once it is gone."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(stat[19]), (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def _status_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mb(pid: int) -> float:
    """Resident memory now (VmRSS), in MiB; 0 when the kernel does not say."""
    return _status_mb(pid, "VmRSS:")


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM), in MiB; 0 when the kernel does not say."""
    return _status_mb(pid, "VmHWM:")


def wait_until(
    ready: Callable[[], T],
    timeout: float,
    what: str,
    *,
    watch: Sequence[Child] = (),
    interval: float = 0.1,
) -> T:
    """Call `ready()` until it returns something truthy, and return that. Raises `Exited` as soon
    as one of the `watch`ed children has exited, `NotReady` (with their log tails) at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        for child in watch:
            child.check()
        value = ready()
        if value:
            return value
        if time.monotonic() >= deadline:
            tails = "".join(f"\n{child.name} log:\n{child.tail()}" for child in watch)
            raise NotReady(f"no {what} within {timeout:g} s{tails}")
        time.sleep(interval)


@dataclass(eq=False)
class Child:
    """One child process and its log."""

    name: str
    proc: subprocess.Popen[Any]
    log: Path | None

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        *,
        name: str,
        log: Path | None,
        env: Mapping[str, str] | None = None,
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | None = None,
        text: bool = False,
        fresh_log: bool = False,
    ) -> Child:
        """Start `argv` in a session of its own, so a Ctrl-C in the terminal reaches only us and
        we stop our children in the order we choose; the kernel still ends it when we die
        (common.process.die_with_parent). Its stdout and stderr go to `log` (appended, or
        truncated first with `fresh_log`), or stdout to a pipe with `stdout=subprocess.PIPE`;
        without a log, both are inherited. `env` defaults to ours."""
        mode = "wb" if fresh_log else "ab"
        with log.open(mode) if log is not None else contextlib.nullcontext() as out:
            proc: subprocess.Popen[Any] = subprocess.Popen(
                list(argv),
                env=dict(env) if env is not None else None,
                stdin=stdin,
                stdout=out if stdout is None else stdout,
                stderr=out,
                text=text,
                start_new_session=True,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - prctl only, no locks taken
            )
        return cls(name, proc, log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = TAIL_CHARS) -> str:
        return log_tail(self.log, chars)

    def check(self) -> None:
        """Raise `Exited`, with the tail of its log, if it is no longer running."""
        if self.proc.poll() is not None:
            raise Exited(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def wait_until(
        self, ready: Callable[[], T], timeout: float, what: str, interval: float = 0.1
    ) -> T:
        """`wait_until` watching this child."""
        return wait_until(ready, timeout, what, watch=(self,), interval=interval)

    def wait_http(self, url: str, timeout: float, interval: float = 0.1) -> None:
        """Until `url` answers 200 (a readiness or health endpoint)."""
        self.wait_until(lambda: http_ok(url), timeout, f"200 from {url}", interval)

    def wait_for_line(self, text: str, timeout: float, interval: float = 0.5) -> str:
        """Until a line of its log contains `text`; that line."""
        log = self.log
        if log is None:
            raise ValueError(f"{self.name} has no log to read")

        def line() -> str:
            found = (ln for ln in log.read_text(errors="replace").splitlines() if text in ln)
            return next(found, "")

        return self.wait_until(line, timeout, f"{text!r} in the log of {self.name}", interval)

    def terminate(self) -> None:
        """SIGTERM, without waiting."""
        if self.proc.poll() is None:
            self.proc.terminate()

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`; its exit code."""
        self.terminate()
        return self.reap(timeout)

    def reap(self, timeout: float = 15.0) -> int:
        """Wait for it to exit, SIGKILL after `timeout`; its exit code."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> int:
        """SIGKILL: the crash case."""
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait()

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss_mb(self) -> float:
        return rss_mb(self.pid)

    def peak_rss_mb(self) -> float:
        return peak_rss_mb(self.pid)


def start_citysense(
    *args: str,
    log: Path,
    env: Mapping[str, str] | None = None,
    name: str | None = None,
    module: str = "citysense.cli",
    fresh_log: bool = False,
) -> Child:
    """`citysense ARGS...` as a child (see `Child.start`); `module` runs another entry point
    that takes the same arguments (a benchmark's variant of a worker)."""
    return Child.start(
        module_argv(module, *args),
        name=name or f"citysense {args[0]}",
        log=log,
        env=env,
        fresh_log=fresh_log,
    )


def stop_each(children: Iterable[Child], timeout: float = 15.0) -> None:
    """One after the other, in the order given: each has exited before the next is asked."""
    for child in children:
        child.stop(timeout)


def stop_together(children: Iterable[Child], timeout: float = 15.0) -> None:
    """SIGTERM to all at once, then wait for each (SIGKILL after `timeout`)."""
    group = list(children)
    for child in group:
        child.terminate()
    for child in group:
        child.reap(timeout)


@dataclass
class Children:
    """The children one run started, stopped together at its end (the last started first)."""

    started: list[Child] = field(default_factory=list)

    def add(self, child: Child) -> Child:
        self.started.append(child)
        return child

    def stop_all(self, timeout: float = 15.0) -> None:
        stop_each(reversed(self.started), timeout)
        self.started.clear()

    def kill_all(self) -> None:
        for child in self.started:
            child.kill()
        self.started.clear()
