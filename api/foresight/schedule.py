"""Foresight in the background: a round every `api_foresight_every` seconds over the past
`api_foresight_days` whole days (quality over the last day), its results written to InfluxDB and
judged against the profiles' signal rules — raising and clearing alarms through the live alarm
book, which stores them and pushes them on the stream like any other alarm. The round itself is
computed in a child process (api.foresight.worker: inside the API, it held the API's answers up
for minutes every hour at 100,000 devices); its points are written and its judgments applied here.

A round that InfluxDB could not answer (down, overloaded, timed out: InfluxUnavailable) is tried
again after a backoff (RETRY: from 30 s, doubling, jittered, honouring Retry-After, never later
than the next round): waiting the whole interval (an hour) lost an hour of foresight each time the
database was busy for ten seconds, as at 100,000 devices while the rollup keeper backfilled. One
it refused (InfluxRejected: the same request fails the same way) waits for the next interval;
health reports both. Any other exception ends the task, and the supervisor (api.core.supervise)
fails /health naming it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from api.core.contract import Contract
from api.core.settings import ApiSettings
from api.core.supervise import Supervisor
from api.foresight import worker
from api.foresight.run import Span
from api.live.alarms import AlarmBook
from common.errors import InfluxError, InfluxUnavailable
from common.influx import AsyncInfluxClient
from common.retry import RetryPolicy

log = logging.getLogger(__name__)
NS = 10**9
DAY_NS = 86_400 * NS
WRITE_LINES = 5_000  # points of a round in one write
JUDGE_SLICE = 1_000  # judgments applied to the alarms between two yields to the event loop
RETRY = RetryPolicy(initial=30.0, maximum=1800.0)  # a round InfluxDB could not answer


def after_failure(exc: InfluxError, failed: int, every: float) -> float:
    """Seconds until a round that failed with `exc` is tried again, `failed` rounds having
    failed in a row before it: soon if InfluxDB could not answer, at the next interval if it
    refused (the same round would fail the same way)."""
    if isinstance(exc, InfluxUnavailable):
        return min(every, RETRY.delay(failed, exc.retry_after))
    return every


class Scheduler:
    def __init__(
        self,
        settings: ApiSettings,
        contract: Contract,
        influx: AsyncInfluxClient,
        alarms: AlarmBook,
        supervisor: Supervisor,
    ) -> None:
        self.every = settings.api_foresight_every
        self.first_after = settings.api_foresight_first_after
        self.days = settings.api_foresight_days
        self.zone = ZoneInfo(settings.api_foresight_timezone)
        worker.holidays(settings.api_foresight_holidays)  # refused at start, not at the first round
        self.settings = settings
        self._pool: ProcessPoolExecutor | None = None  # its child computes a round (worker)
        self.contract = contract
        self.influx = influx
        self.alarms = alarms
        self.supervisor = supervisor
        self.rounds = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.every > 0:
            self._task = self.supervisor.start(self._run(), "citysense-foresight")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._pool is not None:
            # A round in progress is abandoned, its child ended rather than waited for (minutes
            # at 100,000 devices, and the interpreter would wait for it at exit): before Python
            # 3.14 (terminate_workers) the executor has no public way to end its workers.
            for process in list((self._pool._processes or {}).values()):
                process.terminate()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _child(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=worker.started,
                initargs=(self.settings.api_foresight_nice,),
                max_tasks_per_child=1,
            )
        return self._pool

    def windows(self, now_ns: int) -> tuple[Span, Span]:
        """The whole days to compute, and the last day to judge data quality on."""
        midnight = datetime.fromtimestamp(now_ns / NS, self.zone).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        first = midnight - timedelta(days=self.days)
        days = Span(int(first.timestamp()) * NS, int(midnight.timestamp()) * NS)
        return days, Span(now_ns - DAY_NS, now_ns)

    async def round_once(self) -> int:
        """One round, computed in a child process (api.foresight.worker); its points written
        and its judgments applied here; how many points."""
        days, judged = self.windows(time.time_ns())
        loop = asyncio.get_running_loop()
        try:
            outcome = await loop.run_in_executor(
                self._child(), worker.compute, self.settings, days, judged
            )
        except BrokenProcessPool as exc:
            # The child died (killed, out of memory): a new one for the next try, which is
            # soon, as for a round InfluxDB could not answer.
            broken, self._pool = self._pool, None
            if broken is not None:
                broken.shutdown(wait=False)  # its threads go; nothing of it is left to wait for
            raise InfluxUnavailable(f"foresight's process died during a round: {exc}") from None
        if outcome.failure is not None:
            raise outcome.failure.error()
        # Written in batches: at 1,000,000 devices a round is a quality point per device, and
        # written at once, the body was past what InfluxDB takes.
        lines = outcome.lines
        for start in range(0, len(lines), WRITE_LINES):
            await self.influx.write("\n".join(lines[start : start + WRITE_LINES]).encode())
        known = [j for j in outcome.judgments if self.contract.device(j.device_id) is not None]
        for n, j in enumerate(known, 1):
            self.alarms.judge(j.as_alarm(), j.device_id, round(j.value, 4), j.breached, j.time_ns)
            if n % JUDGE_SLICE == 0:
                await asyncio.sleep(0)  # requests and live events between slices
        self.rounds += 1
        return len(lines)

    async def _run(self) -> None:
        await asyncio.sleep(self.first_after)
        failed = 0  # rounds InfluxDB could not answer, in a row
        while True:
            started = time.monotonic()
            wait = self.every
            try:
                await self.round_once()
                failed = 0
                log.info("foresight round done in %.1f s", time.monotonic() - started)
            except InfluxError as exc:
                wait = after_failure(exc, failed, self.every)
                failed += 1
                log.warning("foresight round failed, trying again in %.0f s: %s", wait, exc)
            await asyncio.sleep(wait)
