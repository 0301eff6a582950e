"""Foresight in the background: a round every `api_foresight_every` seconds over the past
`api_foresight_days` whole days (quality over the last day), its results written to InfluxDB and
judged against the profiles' signal rules — raising and clearing alarms through the live alarm
book, which stores them and pushes them on the stream like any other alarm.

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
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from api.core.contract import Contract
from api.core.settings import ApiSettings
from api.core.supervise import Supervisor
from api.foresight import store
from api.foresight.run import Foresight, Round, Span
from api.live.alarms import AlarmBook
from common.errors import ConfigError, InfluxError, InfluxUnavailable
from common.influx import AsyncInfluxClient
from common.retry import RetryPolicy
from device_profiles import AlarmOp, AlarmRule, SignalName, SignalRule

log = logging.getLogger(__name__)
NS = 10**9
DAY_NS = 86_400 * NS
WRITE_LINES = 5_000  # points of a round in one write
JUDGE_SLICE = 1_000  # judgments applied to the alarms between two yields to the event loop
RETRY = RetryPolicy(initial=30.0, maximum=1800.0)  # a round InfluxDB could not answer


def holidays(text: str) -> frozenset[date]:
    try:
        return frozenset(date.fromisoformat(p.strip()) for p in text.split(",") if p.strip())
    except ValueError as exc:
        raise ConfigError(f"CITYSENSE_API_FORESIGHT_HOLIDAYS: {exc}") from None


@dataclass(frozen=True, slots=True)
class Judgment:
    rule: SignalRule
    device_id: str
    value: float
    time_ns: int

    @property
    def breached(self) -> bool:
        if self.rule.op is AlarmOp.ABOVE:
            return self.value > self.rule.threshold
        return self.value < self.rule.threshold

    def as_alarm(self) -> AlarmRule:
        return AlarmRule(
            name=self.rule.name,
            field=self.rule.signal.value,
            op=self.rule.op,
            threshold=self.rule.threshold,
            severity=self.rule.severity,
            description=self.rule.description,
        )


def _latest(values: dict[str, tuple[int, float]], key: str, when: int, value: float) -> None:
    if key not in values or values[key][0] <= when:
        values[key] = (when, value)


def latest_values(result: Round) -> dict[SignalName, dict[str, tuple[int, float]]]:
    """Each device's newest value of each signal in the round."""
    out: dict[SignalName, dict[str, tuple[int, float]]] = {s: {} for s in SignalName}
    zone = result.zone
    for rows in result.night_flow.values():
        for r in rows:
            # The leak rule is judged on the leak detector's verdict, its value the rise.
            rise = (r.rise or 0.0) if r.leak else min(r.rise or 0.0, 0.0)
            _latest(out[SignalName.NIGHT_FLOW_RISE], r.device_id, store.day_ns(r.night, zone), rise)
    for district, days in result.lamp_days.items():
        for d in days:
            when = store.day_ns(d.day, zone)
            for signal, value in (
                (SignalName.LIT_BY_DAY, d.lit_by_day),
                (SignalName.DARK_BY_NIGHT, d.dark_by_night),
                (SignalName.POWER_WHILE_OFF, d.power_while_off),
                (SignalName.POWER_DRIFT, result.drift.get(district, {}).get((d.device_id, d.day))),
            ):
                if value is not None:
                    _latest(out[signal], d.device_id, when, value)
    for q in result.devices_quality:
        _latest(out[SignalName.QUALITY_SCORE], q.device_id, result.days.end_ns, q.score)
    return out


def judgments(result: Round, contract: Contract) -> list[Judgment]:
    values = latest_values(result)
    out = []
    for signal, per_device in values.items():
        for device_id, (when, value) in sorted(per_device.items()):
            device = contract.device(device_id)
            if device is None:
                continue
            for rule in contract.profiles[device.profile].signals:
                if rule.signal is signal:
                    out.append(Judgment(rule, device_id, value, when))
    return out


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
        self.foresight = Foresight(
            contract,
            influx,
            zone=settings.api_foresight_timezone,
            holidays=holidays(settings.api_foresight_holidays),
            concurrency=settings.api_query_concurrency,
            series=settings.api_load_series,
            timeout=settings.api_load_timeout,
        )
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

    def windows(self, now_ns: int) -> tuple[Span, Span]:
        """The whole days to compute, and the last day to judge data quality on."""
        midnight = datetime.fromtimestamp(now_ns / NS, self.zone).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        first = midnight - timedelta(days=self.days)
        days = Span(int(first.timestamp()) * NS, int(midnight.timestamp()) * NS)
        return days, Span(now_ns - DAY_NS, now_ns)

    async def round_once(self) -> Round:
        days, judged = self.windows(time.time_ns())
        result = await self.foresight.compute(days, judged)
        # Off the event loop, and written in batches: at 1,000,000 devices a round is a quality
        # point per device, and those lines took the loop 10 s to build; written at once, the
        # body was past what InfluxDB takes (the round failed, to be tried an hour later).
        lines = await asyncio.to_thread(store.round_lines, result, judged.end_ns)
        for start in range(0, len(lines), WRITE_LINES):
            await self.influx.write("\n".join(lines[start : start + WRITE_LINES]).encode())
        found = await asyncio.to_thread(judgments, result, self.contract)
        for n, j in enumerate(found, 1):
            self.alarms.judge(j.as_alarm(), j.device_id, round(j.value, 4), j.breached, j.time_ns)
            if n % JUDGE_SLICE == 0:
                await asyncio.sleep(0)  # requests and live events between slices
        self.rounds += 1
        return result

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
