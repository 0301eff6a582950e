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
from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import parse_qsl

from api.compute.aggregates import AggregateRequest, answer, check
from api.compute.cells import CellCache
from api.core import query as q
from api.core.contract import Contract
from api.core.errors import ApiError, InvalidParameter
from api.core.settings import ApiSettings
from api.core.supervise import Supervisor
from api.core.tokens import ANONYMOUS, Principal
from common.errors import ConfigError, InfluxError
from common.influx import AsyncInfluxClient

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 1.0
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
    except InvalidParameter as exc:
        raise ConfigError(f"{where}: {exc.name}: {exc.message}") from None
    return request


Asked = tuple[AggregateRequest, Principal]


class Warmer:
    """Keeps two kinds of questions computed: the operator's (from the setting, city-wide), and
    those clients asked recently over the default, moving window (a dashboard polling), each
    with the principal that asked it, until nobody has asked it for `warm_recent_for` seconds.
    Only cells whose data changed are computed again each round, so a polled question costs
    InfluxDB what its clients' requests would have cost, off their request path."""

    def __init__(
        self,
        questions: list[AggregateRequest],
        *,
        settings: ApiSettings,
        contract: Contract,
        influx: AsyncInfluxClient,
        cache: CellCache,
        clock: Callable[[], float] = time.monotonic,
        supervisor: Supervisor | None = None,
    ) -> None:
        self._supervisor = supervisor or Supervisor()
        self.questions: list[Asked] = [(q, ANONYMOUS) for q in questions]
        self.interval = max(settings.api_aggregate_max_staleness, MIN_INTERVAL_S)
        self.rounds = 0
        self._recent: OrderedDict[Asked, float] = OrderedDict()
        self._recent_max = settings.api_aggregate_warm_recent
        self._recent_for = settings.api_aggregate_warm_recent_for
        self._per_token = settings.api_aggregate_warm_recent_per_token
        self._clock = clock
        self._settings = settings
        self._contract = contract
        self._influx = influx
        self._cache = cache
        self._task: asyncio.Task[None] | None = None

    def note(self, request: AggregateRequest, principal: Principal) -> None:
        """`principal` just asked `request`: keep it warm if its window moves with time."""
        if self._recent_max == 0 or request.start is not None or request.end is not None:
            return
        asked = (request, principal)
        if asked in self.questions:
            return
        self._recent[asked] = self._clock()
        self._recent.move_to_end(asked)
        # A token past its share gives up its own oldest question, nobody else's.
        own = [a for a in self._recent if a[1] == principal]
        for old in own[: max(0, len(own) - self._per_token)]:
            del self._recent[old]
        while len(self._recent) > self._recent_max:
            self._recent.popitem(last=False)

    def due(self) -> list[Asked]:
        """The questions of the next round: the operator's, then those asked recently."""
        horizon = self._clock() - self._recent_for
        while self._recent and next(iter(self._recent.values())) < horizon:
            self._recent.popitem(last=False)
        return self.questions + list(self._recent)

    def start(self) -> None:
        if self.questions or self._recent_max:
            self._task = self._supervisor.start(self._run(), "citysense-warm")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def warm_once(self) -> int:
        """Answer every due question once; how many were answered."""
        answered = 0
        for question, principal in self.due():
            what = f"{question.profile}.{question.field}"
            try:
                await answer(
                    question,
                    principal=principal,
                    contract=self._contract,
                    influx=self._influx,
                    settings=self._settings,
                    cache=self._cache,
                )
                answered += 1
            except InfluxError as exc:
                # InfluxDB down or slow: the next round tries again; health reports the outage.
                log.warning("could not warm %s: %s", what, exc)
            except ApiError as exc:  # checked at start
                log.error("cannot warm %s: %s", what, exc.detail)
            except Exception:  # a bug must not end warming silently for good
                log.exception("warming %s failed", what)
        self.rounds += 1
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
