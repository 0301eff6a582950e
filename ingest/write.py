"""Write: a batch of lines to InfluxDB, until stored.

- Retryable failures (InfluxDB down, slow, 5xx, 429) are retried with backoff, forever, until the
  worker is told to stop: nothing is acknowledged meanwhile, so the broker keeps the messages.
- A 400 (InfluxDB 2.x: 422) means some lines are bad. InfluxDB may then have stored the good
  ones ("partial write") or none (1.x: a field type conflict rejects the whole request), so the
  batch is split in halves and rewritten until each bad line stands alone. Rewriting is safe: a
  point with the same series and timestamp overwrites itself. The bad lines are returned for
  the dead-letter store.
- A 413 (request body too large) is split the same way, and each request is kept under
  `max_request_bytes` to begin with: one oversized batch must never stall every message behind
  it. A single line InfluxDB refuses as too large is returned as bad.
- Latest rows (ingest.latest) are derived from the readings: if their retention policy is not
  there they are returned as refused, `missing`, rather than holding the readings behind them.
- Change marks at the end of the lines (ingest.changes) are sent in a request of their own once
  the readings before them are stored — InfluxDB does not make a request's points visible all at
  once, and a reader must never see a mark before its readings — with a fresh stamp on every
  attempt.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from common.errors import InfluxNotFound, InfluxRejected, InfluxUnavailable
from common.influx import REFUSES_LINES, InfluxClient
from common.retry import RetryPolicy, sleep
from ingest.changes import restamp, split_marks
from ingest.stats import Stats
from wire.retention import CHANGES, LATEST, by_policy

log = logging.getLogger(__name__)

# InfluxDB 1.x refuses request bodies over 25 MB (its max-body-size); 2.x and 3.x have limits of
# the same order. Well under them, and large enough that a batch of 5,000 readings is one request.
MAX_REQUEST_BYTES = 8 * 1024 * 1024


class Stopped(Exception):
    """The worker is stopping while the database is still unavailable; nothing was acked."""


class GaveUp(Exception):
    """The database stayed unavailable past the caller's deadline (the caller may spool)."""


@dataclass(frozen=True, slots=True)
class BadLine:
    line: str
    error: str
    missing: bool = False  # refused because its retention policy is not there (rows only)


def _dropped(policy: str, exc: InfluxRejected) -> bool:
    """Lines given up rather than retried: rows (ingest.latest), derived from the readings,
    whose policy is not there."""
    return policy == LATEST and isinstance(exc, InfluxNotFound)


class Writer:
    def __init__(
        self,
        client: InfluxClient,
        stats: Stats,
        stop: threading.Event,
        retry: RetryPolicy | None = None,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        *,
        set_up: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        # Run when InfluxDB says the database or a retention policy is missing, before the
        # write is tried again: the set-up (ingest.worker) that could not run at start.
        self._set_up = set_up
        self._max_bytes = max_request_bytes
        self._stats = stats
        self._stop = stop
        self._retry = retry or RetryPolicy()

    def write(
        self, lines: list[str], deadline: float | None = None, marks: list[str] | None = None
    ) -> list[BadLine]:
        """Store `lines`; return those InfluxDB refuses. Raises Stopped if told to stop first,
        GaveUp if still failing at `deadline` (time.monotonic()). The change marks are extended
        onto `marks` as they were stored (each attempt stamps them afresh): the state feed
        announces them (wire.statefeed)."""
        data, changes = split_marks(lines)
        bad = []
        # One request per retention policy (wire.retention): readings, then dead letters, then
        # the marks, each into the policy that keeps them for their own time.
        # Only the marks at the end are announced: data for the changes policy (an owed mark,
        # wire.latest) is not a change mark.
        parts = [(policy, part, None) for policy, part in by_policy(data)]
        for policy, part, stored in (*parts, (CHANGES, changes, marks)):
            for chunk in _chunks(part, self._max_bytes):
                try:
                    bad += self._write(chunk, policy, deadline, stored)
                except InfluxNotFound as exc:
                    if not _dropped(policy, exc):
                        raise
                    bad += [BadLine(line, str(exc), missing=True) for line in chunk]
        return bad

    def _write(
        self, lines: list[str], policy: str, deadline: float | None, stored: list[str] | None
    ) -> list[BadLine]:
        if not lines:
            return []
        try:
            sent = self._write_retrying(lines, policy, deadline)
        except InfluxRejected as exc:
            if exc.status not in REFUSES_LINES:
                raise
            if len(lines) == 1:
                return [BadLine(lines[0], str(exc))]
            half = len(lines) // 2
            return self._write(lines[:half], policy, deadline, stored) + self._write(
                lines[half:], policy, deadline, stored
            )
        if stored is not None:
            stored.extend(sent)
        return []

    def _write_retrying(self, lines: list[str], policy: str, deadline: float | None) -> list[str]:
        """`lines` as the attempt that stored them sent them (marks restamped)."""
        attempt = 0
        while True:
            started = time.perf_counter()
            sent = restamp(lines)
            try:
                self._client.write("\n".join(sent).encode(), policy=policy)
            except InfluxUnavailable as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    raise GaveUp(str(exc)) from exc
                self._wait(attempt, exc.retry_after, str(exc))
                attempt += 1
                continue
            except InfluxRejected as exc:
                if exc.status in REFUSES_LINES or _dropped(policy, exc):
                    raise
                # 401/403/404, a missing retention policy (1.x's 500, InfluxNotFound): the
                # database or our credentials are wrong. That is an operator's
                # fix, not the data's fault: keep the data, keep retrying, shout in the log.
                # A missing database or policy we may set up ourselves: tried first.
                if isinstance(exc, InfluxNotFound) and self._set_up is not None:
                    self._set_up()
                self._wait(attempt, None, f"InfluxDB refused the write: {exc}")
                attempt += 1
                continue
            self._stats.observe_write(time.perf_counter() - started)
            if attempt:
                log.info("InfluxDB write succeeded after %d retries", attempt)
            return sent

    def _wait(self, attempt: int, retry_after: float | None, why: str) -> None:
        delay = self._retry.delay(attempt, retry_after)
        level = logging.WARNING if attempt < 3 or attempt % 20 == 0 else logging.DEBUG
        log.log(level, "write failed (attempt %d), retrying in %.2fs: %s", attempt + 1, delay, why)
        self._stats.add(write_retries=1)
        # A failed request leaves its body in reference cycles (the exception's traceback holds
        # the frames that hold it), and through an outage almost nothing is allocated to start
        # the collector (its first generation is large, ingest.cli): collect once a retry.
        gc.collect(1)
        if sleep(delay, self._stop):
            raise Stopped(why)


def _chunks(lines: list[str], max_bytes: int) -> list[list[str]]:
    """`lines` in consecutive runs whose request bodies stay under `max_bytes` (a line longer
    than that goes alone, for InfluxDB to judge)."""
    chunks: list[list[str]] = []
    current: list[str] = []
    size = 0
    for line in lines:
        cost = len(line.encode()) + 1
        if current and size + cost > max_bytes:
            chunks.append(current)
            current, size = [], 0
        current.append(line)
        size += cost
    if current:
        chunks.append(current)
    return chunks
