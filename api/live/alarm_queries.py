"""Alarms as a token may see and act on them: selected, found by id, acknowledged."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from api.core.access import check_filters, require_devices
from api.core.contract import Contract
from api.core.errors import Conflict, NotFound, forbidden
from api.core.params import check_choice, time_param
from api.core.tokens import Principal
from api.live.alarms import Alarm, AlarmBook
from common.errors import InfluxRejected, InfluxUnavailable

# How long a client told "not stored yet" is asked to wait before asking again.
ACK_RETRY_AFTER_S = 5.0


@dataclass(frozen=True, slots=True)
class AlarmFilter:
    state: Literal["active", "cleared", "all"] = "active"
    profile: str | None = None
    district: str | None = None
    device_id: str | None = None
    rule: str | None = None
    severity: Literal["info", "warning", "critical"] | None = None
    acknowledged: bool | None = None
    start: str | None = None
    end: str | None = None


def _visible(principal: Principal, alarm: Alarm) -> bool:
    return principal.sees(alarm.profile, alarm.district)


def select(
    book: AlarmBook, principal: Principal, contract: Contract, wanted: AlarmFilter
) -> list[Alarm]:
    """The alarms `principal` sees that match `wanted`, newest first."""
    check_choice("profile", wanted.profile, sorted(contract.profiles))
    check_choice("district", wanted.district, contract.districts)
    check_filters(principal, wanted.profile, wanted.district)
    _replayed(book)
    start_ns = time_param("start", wanted.start) if wanted.start is not None else None
    end_ns = time_param("end", wanted.end) if wanted.end is not None else None
    pool = book.active.values() if wanted.state == "active" else book.by_id.values()
    chosen = [
        a
        for a in pool
        if _visible(principal, a)
        and (wanted.state != "cleared" or a.end_ns is not None)
        and (wanted.profile is None or a.profile == wanted.profile)
        and (wanted.district is None or a.district == wanted.district)
        and (wanted.device_id is None or a.device_id == wanted.device_id)
        and (wanted.rule is None or a.rule == wanted.rule)
        and (wanted.severity is None or a.severity == wanted.severity)
        and (wanted.acknowledged is None or (a.acknowledged_by is not None) is wanted.acknowledged)
        and (start_ns is None or a.start_ns >= start_ns)
        and (end_ns is None or a.start_ns < end_ns)
    ]
    chosen.sort(key=lambda a: (a.start_ns, a.id), reverse=True)
    return chosen


def _replayed(book: AlarmBook) -> None:
    if not book.replayed:
        raise InfluxUnavailable(
            "the stored alarms are not read back yet (InfluxDB has not answered since this API "
            "started)",
            retry_after=ACK_RETRY_AFTER_S,
        )


def find(book: AlarmBook, principal: Principal, alarm_id: str) -> Alarm:
    require_devices(principal)
    _replayed(book)
    alarm = book.by_id.get(alarm_id)
    # An alarm outside the scope is answered like one that does not exist: a scoped token must
    # not learn which alarms (and so which devices) exist.
    if alarm is None or not _visible(principal, alarm):
        raise NotFound(f"unknown alarm {alarm_id!r}")
    return alarm


async def acknowledge(
    book: AlarmBook, principal: Principal, alarm_id: str, note: str | None, wait: float
) -> Alarm:
    """Acknowledge it, and return once its event is stored, at most `wait` seconds: an
    acknowledgement answered done survives the API's crash. Not stored by then, it stays
    queued (the alarm takes it once stored), but a crash would lose it: the caller is told to
    ask again. A repeat of one stored (the same principal and note: its answer lost to a
    crash, a cut connection) is answered as done, with no second event, cleared or not;
    another is a new event (the newest wins), refused 409 once the alarm has cleared, saying
    who acknowledged it if one was stored."""
    alarm = find(book, principal, alarm_id)
    if not principal.acknowledge:
        raise forbidden(f"token {principal.name!r} may not acknowledge alarms (read only)")
    if (alarm.acknowledged_by, alarm.note) == (principal.name, note):
        return alarm
    if alarm.end_ns is not None:
        # Asked again after a 503 while it cleared: whether one was stored since, said here.
        by = alarm.acknowledged_by
        done = "" if by is None else f" (acknowledged by {by!r})"
        raise Conflict(f"alarm {alarm_id!r} has cleared; nothing to acknowledge{done}")
    number = book.acknowledge(alarm, principal.name, note)
    try:
        fate = await asyncio.wait_for(book.outbox.watch(number), wait)
    except TimeoutError:
        raise InfluxUnavailable(
            f"the acknowledgement of {alarm_id!r} is not stored yet ({wait:g} s): it is queued "
            "and stored once InfluxDB takes alarm events again, but lost if the API stops "
            "first; acknowledge again until answered 200",
            retry_after=ACK_RETRY_AFTER_S,
        ) from None
    finally:
        book.outbox.forget(number)
    if fate == "dropped":
        raise InfluxUnavailable(
            f"the acknowledgement of {alarm_id!r} was dropped before it was known to be stored: "
            "alarm events waiting for InfluxDB passed CITYSENSE_API_ALARM_OUTBOX_BYTES; "
            "acknowledge again",
            retry_after=ACK_RETRY_AFTER_S,
        )
    if fate == "refused":
        raise InfluxRejected(
            f"InfluxDB refused the event of the acknowledgement of {alarm_id!r} (the API's log "
            "says why): it is not stored"
        )
    return alarm
