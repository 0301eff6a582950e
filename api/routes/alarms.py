"""Alarms raised from the profiles' rules: list active and past, one by id, acknowledge."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query

from api.core.access import check_filters, forbidden, require_devices
from api.core.params import OFFSET_MAX, check_choice, time_param
from api.core.tokens import Principal
from api.deps import ContractDep, LiveDep, PrincipalDep
from api.errors import documented
from api.live.alarms import Alarm
from api.schemas import AcknowledgePublic, AlarmListPublic, AlarmPublic

router = APIRouter(prefix="/alarms", tags=["alarms"])

AlarmId = Annotated[str, Path(max_length=64, description="Alarm id")]


def _visible(principal: Principal, alarm: Alarm) -> bool:
    return principal.sees(alarm.profile, alarm.district)


def _find(live: LiveDep, principal: Principal, alarm_id: str) -> Alarm:
    require_devices(principal)
    alarm = live.alarms.by_id.get(alarm_id)
    if alarm is None:
        raise HTTPException(404, f"unknown alarm {alarm_id!r}")
    if not _visible(principal, alarm):
        raise forbidden(f"token {principal.name!r} may not read this alarm's device")
    return alarm


@router.get(
    "",
    summary="Active and past alarms",
    description="Alarms raised in this process or replayed from InfluxDB (`alarm_events`, as far "
    "back as CITYSENSE_API_ALARM_LOOKBACK), newest first, filtered; `start`/`end` select alarms "
    "that began in [start, end). A department token sees its own devices' alarms.",
    responses=documented(401, 403),
)
async def list_alarms(
    *,
    principal: PrincipalDep,
    contract: ContractDep,
    live: LiveDep,
    state: Annotated[Literal["active", "cleared", "all"], Query()] = "active",
    profile: Annotated[str | None, Query()] = None,
    district: Annotated[str | None, Query()] = None,
    device_id: Annotated[str | None, Query(max_length=128)] = None,
    rule: Annotated[str | None, Query(max_length=64)] = None,
    severity: Annotated[Literal["info", "warning", "critical"] | None, Query()] = None,
    acknowledged: Annotated[bool | None, Query()] = None,
    start: Annotated[str | None, Query(description="RFC 3339")] = None,
    end: Annotated[str | None, Query(description="RFC 3339, exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
) -> AlarmListPublic:
    check_choice("profile", profile, sorted(contract.profiles))
    check_choice("district", district, contract.districts)
    check_filters(principal, profile, district)
    start_ns = time_param("start", start) if start is not None else None
    end_ns = time_param("end", end) if end is not None else None
    pool = live.alarms.active.values() if state == "active" else live.alarms.by_id.values()
    chosen = [
        a
        for a in pool
        if _visible(principal, a)
        and (state != "cleared" or a.end_ns is not None)
        and (profile is None or a.profile == profile)
        and (district is None or a.district == district)
        and (device_id is None or a.device_id == device_id)
        and (rule is None or a.rule == rule)
        and (severity is None or a.severity == severity)
        and (acknowledged is None or (a.acknowledged_by is not None) is acknowledged)
        and (start_ns is None or a.start_ns >= start_ns)
        and (end_ns is None or a.start_ns < end_ns)
    ]
    chosen.sort(key=lambda a: (a.start_ns, a.id), reverse=True)
    return AlarmListPublic(
        total=len(chosen),
        limit=limit,
        offset=offset,
        items=[AlarmPublic(**a.public()) for a in chosen[offset : offset + limit]],
    )


@router.get("/{alarm_id}", summary="One alarm", responses=documented(401, 403, 404))
async def get_alarm(*, principal: PrincipalDep, live: LiveDep, alarm_id: AlarmId) -> AlarmPublic:
    return AlarmPublic(**_find(live, principal, alarm_id).public())


@router.post(
    "/{alarm_id}/acknowledge",
    summary="Acknowledge an active alarm",
    description="Records who (the token's name) acknowledged it, when, and an optional note; "
    "pushed as an `acknowledged` alarm event and stored. Needs a department token with "
    "`acknowledge: true` covering the device (the city token is read only). 409 if the alarm "
    "has cleared already.",
    responses=documented(401, 403, 404, 409),
)
async def acknowledge_alarm(
    *,
    principal: PrincipalDep,
    live: LiveDep,
    alarm_id: AlarmId,
    body: AcknowledgePublic | None = None,
) -> AlarmPublic:
    alarm = _find(live, principal, alarm_id)
    if not principal.acknowledge:
        raise forbidden(f"token {principal.name!r} may not acknowledge alarms (read only)")
    if alarm.end_ns is not None:
        raise HTTPException(409, f"alarm {alarm_id!r} has cleared; nothing to acknowledge")
    live.alarms.acknowledge(alarm, principal.name, body.note if body else None)
    return AlarmPublic(**alarm.public())
