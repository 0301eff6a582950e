"""Dead letters: every message or reading ingest rejected, with its reason and raw payload."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query

from api.core import query as q
from api.core.access import forbidden, require_devices
from api.core.params import time_window
from api.core.times import format_rfc3339
from api.core.tokens import Principal
from api.deps import ContractDep, InfluxDep, PrincipalDep
from api.errors import documented, invalid_query
from api.schemas import DeadLetterCountsPublic, DeadLetterListPublic, DeadLetterPublic
from wire.reasons import Reason

router = APIRouter(prefix="/dead-letters", tags=["dead letters"])

UNKNOWN_PROFILE = "unknown"
PAGE_MAX = 1000
OFFSET_MAX = 100_000

SCOPE_DOC = """A `city` token sees every dead letter; a department token without a district
restriction sees those of its profiles (dead letters of unknown profiles are the city's). A
department limited to some districts cannot read them (403): a rejected message may not name a
registered device, so its district is unknown."""

ReasonsParam = Annotated[
    list[Reason] | None, Query(description="Reason codes; repeat to match any of several")
]
ProfileParam = Annotated[
    str | None, Query(description="A profile name, or `unknown` for topics of no known profile")
]
StartParam = Annotated[str | None, Query(description="RFC 3339; default: 24 h before end")]
EndParam = Annotated[str | None, Query(description="RFC 3339, exclusive; default: now")]


def _profiles(principal: Principal, profile: str | None, known: list[str]) -> list[str]:
    """The profile tags this request may see; [] means no restriction."""
    allowed = [*known, UNKNOWN_PROFILE]
    if profile is not None and profile not in allowed:
        raise invalid_query(
            "profile",
            profile,
            f"unknown profile {profile!r}; allowed: {', '.join(allowed)}",
            allowed=allowed,
        )
    require_devices(principal)
    if principal.districts is not None:
        raise forbidden(f"token {principal.name!r} is limited to districts: {SCOPE_DOC}")
    if principal.profiles is None:
        return [profile] if profile is not None else []
    if profile is not None:
        if profile not in principal.profiles:
            raise forbidden(f"token {principal.name!r} may not read profile {profile!r}")
        return [profile]
    return sorted(principal.profiles)


def _decode(row: dict[str, Any]) -> tuple[str | None, Literal["text", "base64"] | None]:
    payload, encoding = row.get("payload"), row.get("payload_encoding")
    if not isinstance(payload, str):
        return None, None
    if encoding == "json":
        # Stored as a JSON string literal so any text survives line protocol; undo that.
        try:
            text = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return payload, "text"
        return (text, "text") if isinstance(text, str) else (payload, "text")
    return payload, "base64"


def _text(row: dict[str, Any], name: str) -> str | None:
    value = row.get(name)
    return value if isinstance(value, str) else None


def dead_letter_public(row: dict[str, Any]) -> DeadLetterPublic:
    payload, encoding = _decode(row)
    replayed = row.get("replayed_at")
    size = row.get("payload_bytes")
    truncated = row.get("truncated")
    return DeadLetterPublic(
        time=format_rfc3339(int(row["time"])),
        reason=str(row.get("reason") or ""),
        profile=str(row.get("profile") or UNKNOWN_PROFILE),
        worker=_text(row, "worker") or None,
        topic=_text(row, "topic"),
        device_id=_text(row, "device_id"),
        detail=_text(row, "detail"),
        payload=payload,
        payload_encoding=encoding,
        payload_bytes=int(size) if isinstance(size, int | float) else None,
        truncated=truncated if isinstance(truncated, bool) else None,
        replayed_at=format_rfc3339(int(replayed)) if isinstance(replayed, int | float) else None,
        replay_result=_text(row, "replay_result"),
    )


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
    profiles = _profiles(principal, profile, sorted(contract.profiles))
    start_ns, end_ns = time_window(start, end)
    selection = q.DeadLetterFilter(
        start_ns, end_ns, [r.value for r in reason or ()], profiles, device_id
    )
    page, totals = await asyncio.gather(
        q.fetch(influx, q.dead_letters(selection, limit=limit, offset=offset)),
        q.fetch(influx, q.dead_letter_counts(selection, "reason")),
    )
    total = sum(int(row["count"]) for series in totals for row in series.rows())
    return DeadLetterListPublic(
        total=total,
        limit=limit,
        offset=offset,
        start=format_rfc3339(start_ns),
        end=format_rfc3339(end_ns),
        items=[dead_letter_public(row) for series in page for row in series.rows()],
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
    profiles = _profiles(principal, profile, sorted(contract.profiles))
    start_ns, end_ns = time_window(start, end)
    selection = q.DeadLetterFilter(start_ns, end_ns, [r.value for r in reason or ()], profiles)
    counts: dict[str, int] = {}
    for series in await q.fetch(influx, q.dead_letter_counts(selection, by)):
        key = series.tags.get(by, "")
        counts[key] = counts.get(key, 0) + sum(int(row["count"]) for row in series.rows())
    return DeadLetterCountsPublic(
        by=by,
        start=format_rfc3339(start_ns),
        end=format_rfc3339(end_ns),
        total=sum(counts.values()),
        counts=dict(sorted(counts.items())),
    )
