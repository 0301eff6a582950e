"""Warm: the aggregates the operator names are kept computed, so that even their first ask after
a start is answered from kept cells (api.cells) instead of seconds of InfluxDB work.

`CITYSENSE_API_AGGREGATE_WARM` holds questions as the query strings of GET /aggregates,
separated by `;` — e.g. `profile=water_pipe&field=pressure&every=1h; profile=power_meter&
field=totalActiveEnergyImport&agg=delta&every=day`. Each is answered, city-wide, right after
start and then again every max-staleness interval, which computes only the cells whose data
changed (the current window, late readings). A question the contract cannot answer stops the
start with a message saying which and why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import parse_qsl

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError

from api import query as q
from api.cells import CellCache
from api.contract import Contract
from api.routes.aggregates import AggregateRequest, answer, check
from api.settings import ApiSettings
from api.tokens import ANONYMOUS
from citysense.errors import ConfigError, InfluxError
from citysense.influx import AsyncInfluxClient

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 5.0
_TEXT = ("profile", "field", "equals", "every", "tz", "district", "start", "end")


def parse_questions(text: str, contract: Contract, settings: ApiSettings) -> list[AggregateRequest]:
    """The questions of the setting, each checked against the contract; ConfigError if one
    cannot be asked."""
    questions = []
    for n, part in enumerate((p.strip() for p in text.split(";")), start=1):
        if part:
            questions.append(_question(n, part, contract, settings))
    return questions


def _question(n: int, text: str, contract: Contract, settings: ApiSettings) -> AggregateRequest:
    where = f"CITYSENSE_API_AGGREGATE_WARM, question {n} ({text!r})"
    params = dict(parse_qsl(text, keep_blank_values=True, strict_parsing=False))
    unknown = sorted(params.keys() - {*_TEXT, "agg", "group_by"})
    if unknown:
        raise ConfigError(f"{where}: unknown parameter(s) {', '.join(unknown)}")
    if "profile" not in params or "field" not in params:
        raise ConfigError(f"{where}: profile and field are required")
    try:
        agg = q.Aggregate(params.get("agg", "mean"))
    except ValueError:
        allowed = ", ".join(a.value for a in q.Aggregate)
        raise ConfigError(f"{where}: agg must be one of {allowed}") from None
    group_by = params.get("group_by", "district")
    if group_by not in ("district", "none"):
        raise ConfigError(f"{where}: group_by must be district or none")
    request = AggregateRequest(
        agg=agg,
        group_by="none" if group_by == "none" else "district",
        **{k: v for k, v in params.items() if k in _TEXT},
    )
    try:
        check(request, contract, settings)
    except RequestValidationError as exc:
        raise ConfigError(f"{where}: {_message(exc)}") from None
    return request


def _message(exc: RequestValidationError) -> str:
    return "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in exc.errors())


class Warmer:
    def __init__(
        self,
        questions: list[AggregateRequest],
        *,
        settings: ApiSettings,
        contract: Contract,
        influx: AsyncInfluxClient,
        cache: CellCache,
    ) -> None:
        self.questions = questions
        self.interval = max(settings.api_aggregate_max_staleness, MIN_INTERVAL_S)
        self._settings = settings
        self._contract = contract
        self._influx = influx
        self._cache = cache
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.questions:
            self._task = asyncio.create_task(self._run(), name="citysense-warm")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def warm_once(self) -> int:
        """Answer every question once; how many were answered."""
        answered = 0
        for question in self.questions:
            try:
                await answer(
                    question,
                    principal=ANONYMOUS,
                    contract=self._contract,
                    influx=self._influx,
                    settings=self._settings,
                    cache=self._cache,
                )
                answered += 1
            except InfluxError as exc:
                # InfluxDB down or slow: the next round tries again; health reports the outage.
                log.warning("could not warm %s.%s: %s", question.profile, question.field, exc)
            except (HTTPException, RequestValidationError) as exc:  # checked at start
                detail = exc.detail if isinstance(exc, HTTPException) else _message(exc)
                log.error("cannot warm %s.%s: %s", question.profile, question.field, detail)
            except Exception:  # a bug must not end warming silently for good
                log.exception("warming %s.%s failed", question.profile, question.field)
        return answered

    async def _run(self) -> None:
        started = time.monotonic()
        answered = await self.warm_once()
        log.info(
            "aggregates warmed: %d of %d questions in %.1f s; again every %g s",
            answered,
            len(self.questions),
            time.monotonic() - started,
            self.interval,
        )
        while True:
            await asyncio.sleep(self.interval)
            await self.warm_once()
