"""Dead letters as the API serves them: selected within the token's scope, paged, counted.
How they are stored is the wire contract wire.deadletters."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal

from api.core import query as q
from api.core.access import require_devices
from api.core.errors import forbidden, invalid_query
from api.core.params import time_window
from api.core.times import format_rfc3339
from api.core.tokens import Principal
from api.schemas import DeadLetterCountsPublic, DeadLetterListPublic, DeadLetterPublic
from common.influx import AsyncInfluxClient
from wire.deadletters import UNKNOWN_PROFILE, payload_text
from wire.reasons import Reason

SCOPE_DOC = """A `city` token sees every dead letter; a department token without a district
restriction sees those of its profiles: a dead letter is filed under the registry's profile of its
device, not the topic's, and a device the registry does not know is the city's (`unknown`). A
department limited to some districts cannot read them (403): a rejected message may not name a
registered device, so its district is unknown."""


@dataclass(frozen=True, slots=True)
class DeadLetterRequest:
    reasons: tuple[Reason, ...] = ()
    profile: str | None = None
    device_id: str | None = None
    start: str | None = None
    end: str | None = None


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


def _selection(
    request: DeadLetterRequest, principal: Principal, profiles: list[str]
) -> q.DeadLetterFilter:
    seen = _profiles(principal, request.profile, profiles)
    start_ns, end_ns = time_window(request.start, request.end)
    reasons = [r.value for r in request.reasons]
    return q.DeadLetterFilter(start_ns, end_ns, reasons, seen, request.device_id)


async def page(
    request: DeadLetterRequest,
    *,
    principal: Principal,
    profiles: list[str],
    influx: AsyncInfluxClient,
    limit: int,
    offset: int,
) -> DeadLetterListPublic:
    selection = _selection(request, principal, profiles)
    rows, totals = await asyncio.gather(
        q.fetch(influx, q.dead_letters(selection, limit=limit, offset=offset)),
        q.fetch(influx, q.dead_letter_counts(selection, "reason")),
    )
    total = sum(int(row["count"]) for series in totals for row in series.rows())
    return DeadLetterListPublic(
        total=total,
        limit=limit,
        offset=offset,
        start=format_rfc3339(selection.start_ns),
        end=format_rfc3339(selection.end_ns),
        items=[dead_letter_public(row) for series in rows for row in series.rows()],
    )


async def counts(
    request: DeadLetterRequest,
    by: Literal["reason", "profile"],
    *,
    principal: Principal,
    profiles: list[str],
    influx: AsyncInfluxClient,
) -> DeadLetterCountsPublic:
    selection = _selection(request, principal, profiles)
    found: dict[str, int] = {}
    for series in await q.fetch(influx, q.dead_letter_counts(selection, by)):
        key = series.tags.get(by, "")
        found[key] = found.get(key, 0) + sum(int(row["count"]) for row in series.rows())
    return DeadLetterCountsPublic(
        by=by,
        start=format_rfc3339(selection.start_ns),
        end=format_rfc3339(selection.end_ns),
        total=sum(found.values()),
        counts=dict(sorted(found.items())),
    )


def _text(row: dict[str, Any], name: str) -> str | None:
    value = row.get(name)
    return value if isinstance(value, str) else None


def dead_letter_public(row: dict[str, Any]) -> DeadLetterPublic:
    stored = row.get("payload")
    payload, encoding = (
        payload_text(stored, row.get("payload_encoding"))
        if isinstance(stored, str)
        else (None, None)
    )
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
