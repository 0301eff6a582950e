"""The warm setting: questions as GET /aggregates query strings, checked against the contract at
start so that a typo stops the API with a message instead of warming nothing."""

from __future__ import annotations

import pytest

from api import query as q
from api.contract import Contract
from api.routes.aggregates import AggregateRequest
from api.settings import ApiSettings
from api.warm import parse_questions
from citysense.errors import ConfigError
from device_profiles import DEFAULT_REGISTRY, load_profiles, load_registry

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
