"""Alarms raised from the profiles' rules: list active and past, one by id, acknowledge
(api.live.alarm_queries)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.core.params import OFFSET_MAX
from api.deps import ContractDep, LiveDep, PrincipalDep
from api.errors import documented
from api.live.alarm_queries import AlarmFilter, acknowledge, find, select
from api.schemas import AcknowledgePublic, AlarmFilterQuery, AlarmListPublic, AlarmPublic

router = APIRouter(prefix="/alarms", tags=["alarms"])

AlarmId = Annotated[str, Path(max_length=64, description="Alarm id")]


@router.get(
    "",
    summary="Active and past alarms",
    description="Alarms raised in this process or replayed from InfluxDB (`alarm_events`, as far "
    "back as CITYSENSE_API_ALARM_LOOKBACK), newest first, filtered; `start`/`end` select alarms "
    "that began in [start, end). A department token sees its own devices' alarms. 503 until "
    "the stored alarms are read back (InfluxDB away since the API started).",
    responses=documented(401, 403, 503),
)
async def list_alarms(
    *,
    principal: PrincipalDep,
    contract: ContractDep,
    live: LiveDep,
    filters: Annotated[AlarmFilterQuery, Query()],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
) -> AlarmListPublic:
    wanted = AlarmFilter(**filters.model_dump())
    chosen = select(live.alarms, principal, contract, wanted)
    return AlarmListPublic(
        total=len(chosen),
        limit=limit,
        offset=offset,
        items=[AlarmPublic(**a.public()) for a in chosen[offset : offset + limit]],
    )


@router.get("/{alarm_id}", summary="One alarm", responses=documented(401, 403, 404, 503))
async def get_alarm(*, principal: PrincipalDep, live: LiveDep, alarm_id: AlarmId) -> AlarmPublic:
    return AlarmPublic(**find(live.alarms, principal, alarm_id).public())


@router.post(
    "/{alarm_id}/acknowledge",
    summary="Acknowledge an active alarm",
    description="Records who (the token's name) acknowledged it, when, and an optional note; "
    "pushed as an `acknowledged` alarm event and stored. Answered once the event is stored: "
    "503 (with Retry-After) if InfluxDB has not taken it within "
    "CITYSENSE_API_ALARM_ACK_WAIT seconds — it stays queued, but is stored for sure only "
    "once a repeat of the request is answered 200 — and 502 if InfluxDB refuses it. Needs a "
    "department token with `acknowledge: true` covering the device (the city token is read "
    "only). 409 if the alarm has cleared already.",
    responses=documented(401, 403, 404, 409, 502, 503),
)
async def acknowledge_alarm(
    *,
    principal: PrincipalDep,
    live: LiveDep,
    alarm_id: AlarmId,
    body: AcknowledgePublic | None = None,
) -> AlarmPublic:
    note = body.note if body else None
    wait = live.settings.api_alarm_ack_wait
    alarm = await acknowledge(live.alarms, principal, alarm_id, note, wait)
    return AlarmPublic(**alarm.public())
