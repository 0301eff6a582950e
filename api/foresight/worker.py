"""A foresight round computed in a process of its own, so that the API's answers do not wait for
it. Measured at 100,000 devices (bench.api_bench, run 13): computed inside the API, a round held
the API process at 200 % CPU for 140-300 s every hour (its reads parsed, astral per lamp
reading, quality per device, the models fitted: all under the API's GIL), and aggregates asked
meanwhile took several times as long.

The child is spawned for one round (`max_tasks_per_child=1`: the hundreds of MB a round holds at
100,000 devices are given back when it ends) at a lower CPU priority (`api_foresight_nice`).
It loads the device contract from the settings' files itself, as `citysense rollups` does:
handing it the API's would pickle it on the API's event loop, 0.75 s at 100,000 devices (13.7
MB), measured; the API applies only judgments of devices it knows. It reads InfluxDB with a
client of its own, and returns what the API does with a round: the lines to store, and the
judgments for the alarm book. Errors are translated here, once, into a Failure the API raises
again as the same kind (InfluxDB's keyword arguments do not survive pickling between
processes): InfluxDB could not answer (tried again soon), or it refused, or the contract files
became invalid since the API started (tried at the next interval; health names it).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from datetime import date

from api.core.contract import Contract
from api.core.settings import ApiSettings
from api.foresight import store
from api.foresight.judge import Judgment, judgments
from api.foresight.run import Foresight, Span
from common.errors import ConfigError, InfluxError, InfluxRejected, InfluxUnavailable
from common.influx import AsyncInfluxClient
from device_profiles import ContractError


def holidays(text: str) -> frozenset[date]:
    try:
        return frozenset(date.fromisoformat(p.strip()) for p in text.split(",") if p.strip())
    except ValueError as exc:
        raise ConfigError(f"CITYSENSE_API_FORESIGHT_HOLIDAYS: {exc}") from None


@dataclass(frozen=True, slots=True)
class Failure:
    unavailable: bool  # InfluxUnavailable (worth trying again soon), else InfluxRejected
    message: str
    status: int | None
    retry_after: float | None

    def error(self) -> InfluxError:
        if self.unavailable:
            return InfluxUnavailable(self.message, status=self.status, retry_after=self.retry_after)
        return InfluxRejected(self.message, status=self.status)


@dataclass(frozen=True, slots=True)
class Outcome:
    lines: list[str]  # the round's points, line protocol
    judgments: list[Judgment]
    failure: Failure | None = None


def started(nice: int) -> None:
    """The child's initializer."""
    if nice:
        os.nice(nice)


def compute(settings: ApiSettings, days: Span, judged: Span) -> Outcome:
    """One round, in the child."""
    try:
        profiles, registry = settings.load_contract()
        contract = Contract.build(profiles, registry)
        return asyncio.run(_compute(settings, contract, days, judged))
    except InfluxUnavailable as exc:
        return Outcome([], [], Failure(True, str(exc), exc.status, exc.retry_after))
    except InfluxError as exc:
        return Outcome([], [], Failure(False, str(exc), exc.status, None))
    except ContractError as exc:
        message = f"the device contract's files are invalid now: {exc}"
        return Outcome([], [], Failure(False, message, None, None))


async def _compute(settings: ApiSettings, contract: Contract, days: Span, judged: Span) -> Outcome:
    influx = AsyncInfluxClient(settings.influx)
    try:
        foresight = Foresight(
            contract,
            influx,
            zone=settings.api_foresight_timezone,
            holidays=holidays(settings.api_foresight_holidays),
            concurrency=settings.api_query_concurrency,
            series=settings.api_load_series,
            timeout=settings.api_load_timeout,
        )
        result = await foresight.compute(days, judged)
    finally:
        await influx.aclose()
    return Outcome(store.round_lines(result, judged.end_ns), judgments(result, contract))
