"""Answers of /signals, /forecasts and /quality from foresight's stored measurements, within the
asker's scope: departments see their profiles and districts, the city everything; open data only
forecasts, which are per district, and only the points summed from at least `min_devices` meters
in every hour they were built from (their `meters` field), so no forecast ever describes one
household. Not the meters registered: a district rolling meters out has many registered and few
reporting, and its forecast would have been one household's consumption."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from api.core import query as q
from api.core.access import check_filters
from api.core.contract import Contract
from api.core.errors import forbidden, invalid_query
from api.core.times import format_rfc3339, now_ns, parse_rfc3339
from api.core.tokens import Principal
from api.foresight import queries
from api.foresight.public import StoredListPublic, StoredPointPublic
from api.foresight.run import METER
from common.influx import AsyncInfluxClient

DEFAULT_SPAN_NS = 7 * 86_400 * 10**9
LIMIT_MAX = 5000


@dataclass(frozen=True, slots=True)
class Ask:
    start: str | None
    end: str | None
    limit: int
    district: str | None = None
    profile: str | None = None
    device_id: str | None = None
    name: str | None = None  # the signal, or the forecast's model


def _span(ask: Ask) -> tuple[int, int]:
    try:
        end = parse_rfc3339(ask.end) if ask.end else now_ns() + 2 * 86_400 * 10**9
    except ValueError as exc:
        raise invalid_query("end", ask.end, str(exc)) from None
    try:
        start = parse_rfc3339(ask.start) if ask.start else end - DEFAULT_SPAN_NS
    except ValueError as exc:
        raise invalid_query("start", ask.start, str(exc)) from None
    if start >= end:
        raise invalid_query("start", ask.start, "start must be before end")
    return start, end


async def _points(
    influx: AsyncInfluxClient, measurement: str, ask: Ask, tags: Mapping[str, Sequence[str]]
) -> list[StoredPointPublic]:
    start, end = _span(ask)
    series = await q.fetch(influx, queries.stored(measurement, start, end, tags, ask.limit))
    out = []
    for s in series:
        for row in s.rows():
            time_ns = int(row.pop("time"))
            tag_values = {
                k: str(row.pop(k))
                for k in ("signal", "model", "profile", "district", "device_id")
                if row.get(k)
            }
            values = {k: v for k, v in row.items() if v is not None and k not in tag_values}
            out.append(
                StoredPointPublic(time=format_rfc3339(time_ns), tags=tag_values, values=values)
            )
    return out


def _visible(principal: Principal, contract: Contract, point: StoredPointPublic) -> bool:
    device = contract.device(point.tags.get("device_id", ""))
    if device is not None:
        return principal.sees(device.profile, device.district)
    district = point.tags.get("district", "")
    profile = point.tags.get("profile")
    # A point of no profile (a district's quality) is over every profile there, and names its
    # worst devices: only for a token that reads every profile.
    sees = principal.profiles is None if profile is None else principal.sees_profile(profile)
    return principal.sees_devices and principal.sees_district(district) and sees


async def signals(
    ask: Ask, *, principal: Principal, contract: Contract, influx: AsyncInfluxClient
) -> StoredListPublic:
    check_filters(principal, ask.profile, ask.district)
    tags = {
        "signal": _one(ask.name),
        "district": _one(ask.district),
        "profile": _one(ask.profile),
        "device_id": _one(ask.device_id),
    }
    points = await _points(influx, queries.SIGNALS, ask, tags)
    return StoredListPublic(items=[p for p in points if _visible(principal, contract, p)])


async def quality(
    ask: Ask, *, principal: Principal, contract: Contract, influx: AsyncInfluxClient
) -> StoredListPublic:
    check_filters(principal, ask.profile, ask.district)
    tags = {
        "district": _one(ask.district),
        "profile": _one(ask.profile),
        "device_id": _one(ask.device_id),
    }
    points = await _points(influx, queries.QUALITY, ask, tags)
    return StoredListPublic(items=[p for p in points if _visible(principal, contract, p)])


async def forecasts(
    ask: Ask,
    *,
    principal: Principal,
    contract: Contract,
    influx: AsyncInfluxClient,
    min_devices: int,
) -> StoredListPublic:
    if principal.sees_devices and not principal.sees_profile(METER):
        raise forbidden(f"token {principal.name!r} may not read profile {METER!r}")
    if ask.district is not None and not principal.sees_district(ask.district):
        raise forbidden(f"token {principal.name!r} may not read district {ask.district!r}")
    tags = {"district": _one(ask.district), "model": _one(ask.name)}
    items = await _points(influx, queries.FORECASTS, ask, tags)
    items += await _points(influx, queries.FORECAST_ERRORS, ask, {"district": _one(ask.district)})
    allowed = {d for d in contract.districts if principal.sees_district(d)}
    return StoredListPublic(
        items=[
            p
            for p in items
            if p.tags.get("district") in allowed
            and (principal.sees_devices or _summed_from(p) >= min_devices)
        ]
    )


def _summed_from(point: StoredPointPublic) -> int:
    """How many meters a forecast point was summed from at the fewest (store.forecast_lines); 0
    for a point stored before it was recorded, which open data therefore never gets."""
    meters = point.values.get("meters", 0)
    return meters if isinstance(meters, int) and not isinstance(meters, bool) else 0


def _one(value: str | None) -> list[str]:
    return [] if value is None else [value]
