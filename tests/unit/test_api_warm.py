"""The warm setting: questions as GET /aggregates query strings, checked against the contract at
start so that a typo stops the API with a message instead of warming nothing."""

from __future__ import annotations

import pytest

from api.compute.aggregates import AggregateRequest
from api.compute.warm import Warmer, parse_questions
from api.core import query as q
from api.core.contract import Contract
from api.core.settings import ApiSettings
from api.core.tokens import ANONYMOUS, Principal, Scope
from common.errors import ConfigError
from device_profiles import DEFAULT_REGISTRY, load_profiles, load_registry
from tests.support.clock import Clock

PROFILES = load_profiles()
CONTRACT = Contract.build(PROFILES, load_registry(DEFAULT_REGISTRY, PROFILES))
SETTINGS = ApiSettings(_env_file=None, api_auth="off")


def test_questions_are_parsed_with_the_routes_defaults() -> None:
    questions = parse_questions(
        " profile=water_pipe&field=pressure&every=15m ;"
        "profile=power_meter&field=totalActiveEnergyImport&agg=delta&every=day&tz=Asia/Shanghai;",
        CONTRACT,
        SETTINGS,
    )
    assert questions == [
        AggregateRequest(profile="water_pipe", field="pressure", every="15m"),
        AggregateRequest(
            profile="power_meter",
            field="totalActiveEnergyImport",
            agg=q.Aggregate.DELTA,
            every="day",
            tz="Asia/Shanghai",
        ),
    ]
    assert parse_questions("", CONTRACT, SETTINGS) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("profile=water_pipe&field=pressure&colour=red", "unknown parameter(s) colour"),
        ("profile=water_pipe", "profile and field are required"),
        ("profile=water_pipe&field=pressure&agg=median", "agg must be one of"),
        ("profile=water_pipe&field=pressure&group_by=street", "group_by must be"),
        ("profile=water_pipe&field=presure", "'presure' is not a field of 'water_pipe'"),
        ("profile=sewer&field=level", "unknown profile 'sewer'"),
        ("profile=water_pipe&field=pressure&agg=delta", "agg"),
        ("profile=water_pipe&field=pressure&every=1hr", "every"),
        ("profile=water_pipe&field=pressure&every=day&tz=Mars/Base", "tz"),
        ("profile=water_pipe&field=pressure&start=yesterday", "start"),
        ("profile=water_pipe&field=pressure&every=1s", "exceed the maximum"),
    ],
)
def test_a_question_that_cannot_be_asked_stops_the_start(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match="question 2") as caught:
        parse_questions(f"profile=water_pipe&field=pressure; {text}", CONTRACT, SETTINGS)
    assert message in str(caught.value)


def test_questions_over_the_moving_window_are_warmed_while_asked() -> None:
    clock = Clock()
    settings = SETTINGS.model_copy(
        update={"api_aggregate_warm_recent": 2, "api_aggregate_warm_recent_for": 600.0}
    )
    configured = AggregateRequest(profile="water_pipe", field="pressure")
    warmer = Warmer(
        [configured],
        settings=settings,
        contract=CONTRACT,
        influx=None,
        cache=None,
        clock=clock,  # type: ignore[arg-type]
    )
    dept = Principal(name="water", scope=Scope.DEPARTMENT, profiles=frozenset({"water_pipe"}))
    daily = AggregateRequest(profile="water_pipe", field="pressure", every="day")
    fixed = AggregateRequest(profile="water_pipe", field="pressure", start="2026-01-01T00:00:00Z")
    warmer.note(daily, dept)
    warmer.note(fixed, dept)  # a fixed window does not move: nothing to keep refreshing
    warmer.note(configured, ANONYMOUS)  # already the operator's
    assert warmer.due() == [(configured, ANONYMOUS), (daily, dept)]
    clock.now = 300.0
    hourly = AggregateRequest(profile="water_pipe", field="pressure", every="1h")
    lamps = AggregateRequest(profile="streetlight", field="powerConsumption")
    warmer.note(hourly, dept)
    warmer.note(lamps, dept)  # a third recent question: the least recently asked goes
    assert warmer.due()[1:] == [(hourly, dept), (lamps, dept)]
    clock.now = 901.0  # not asked for 601 s
    assert warmer.due() == [(configured, ANONYMOUS)]
