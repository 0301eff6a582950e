"""Dead letters: every message or reading ingest rejected, with its reason and raw payload
(api.compute.dead_letters)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from api.compute.dead_letters import SCOPE_DOC, DeadLetterRequest, counts, page
from api.deps import ContractDep, InfluxDep, PrincipalDep
from api.errors import documented
from api.schemas import DeadLetterCountsPublic, DeadLetterListPublic
from wire.reasons import Reason

router = APIRouter(prefix="/dead-letters", tags=["dead letters"])

PAGE_MAX = 1000
OFFSET_MAX = 100_000

ReasonsParam = Annotated[
    list[Reason] | None, Query(description="Reason codes; repeat to match any of several")
]
ProfileParam = Annotated[
    str | None, Query(description="A profile name, or `unknown` for topics of no known profile")
]
StartParam = Annotated[str | None, Query(description="RFC 3339; default: 24 h before end")]
EndParam = Annotated[str | None, Query(description="RFC 3339, exclusive; default: now")]


@router.get(
    "",
    summary="Rejected messages, newest first",
    description="Dead letters received in [start, end), filtered by reason, profile and device "
    "id. `payload` is the text as received when it was UTF-8, base64 otherwise.\n\n" + SCOPE_DOC,
    responses=documented(401, 403, 502, 503),
)
async def list_dead_letters(
    *,
    principal: PrincipalDep,
    contract: ContractDep,
    influx: InfluxDep,
    reason: ReasonsParam = None,
    profile: ProfileParam = None,
    device_id: Annotated[str | None, Query(max_length=256, description="Exact device id")] = None,
    start: StartParam = None,
    end: EndParam = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 100,
    offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
) -> DeadLetterListPublic:
    request = DeadLetterRequest(tuple(reason or ()), profile, device_id, start, end)
    known = sorted(contract.profiles)
    return await page(
        request, principal=principal, profiles=known, influx=influx, limit=limit, offset=offset
    )


@router.get(
    "/counts",
    summary="Dead letters counted by reason or by profile",
    description="How many messages were rejected in [start, end), per reason code or per "
    "profile; values without dead letters are absent.\n\n" + SCOPE_DOC,
    responses=documented(401, 403, 502, 503),
)
async def count_dead_letters(
    *,
    principal: PrincipalDep,
    contract: ContractDep,
    influx: InfluxDep,
    by: Annotated[Literal["reason", "profile"], Query(description="Count per")] = "reason",
    reason: ReasonsParam = None,
    profile: ProfileParam = None,
    start: StartParam = None,
    end: EndParam = None,
) -> DeadLetterCountsPublic:
    request = DeadLetterRequest(tuple(reason or ()), profile, None, start, end)
    known = sorted(contract.profiles)
    return await counts(request, by, principal=principal, profiles=known, influx=influx)
