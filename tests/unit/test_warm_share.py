"""One token cannot take every background-refresh slot of the API (issue 10)."""

from __future__ import annotations

from api.compute.aggregates import AggregateRequest
from api.compute.warm import Warmer
from api.core.contract import Contract
from api.core.settings import ApiSettings
from api.core.tokens import Principal, Scope
from device_profiles import DEFAULT_REGISTRY, load_profiles, load_registry
from tests.support.clock import Clock

PROFILES = load_profiles()
CONTRACT = Contract.build(PROFILES, load_registry(DEFAULT_REGISTRY, PROFILES))
SETTINGS = ApiSettings(
    _env_file=None,  # type: ignore[call-arg]
    api_auth="off",
    api_aggregate_warm_recent=6,
    api_aggregate_warm_recent_per_token=2,
)


def test_a_token_past_its_share_gives_up_its_own_oldest_question() -> None:
    warmer = Warmer(
        [],
        settings=SETTINGS,
        contract=CONTRACT,
        influx=None,
        cache=None,
        clock=Clock(),  # type: ignore[arg-type]
    )
    greedy = Principal(name="greedy", scope=Scope.CITY)
    other = Principal(name="other", scope=Scope.CITY)
    theirs = AggregateRequest(profile="water_pipe", field="pressure")
    warmer.note(theirs, other)
    asked = [
        AggregateRequest(profile="water_pipe", field="pressure", every=f"{n}m")
        for n in (1, 2, 3, 4, 5, 6)
    ]
    for question in asked:
        warmer.note(question, greedy)
    assert warmer.due() == [(theirs, other), (asked[-2], greedy), (asked[-1], greedy)]
