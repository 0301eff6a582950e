"""Alarms from the profiles' rules, evaluated on the stream of readings the state feed brings.

A rule (device_profiles.AlarmRule) raises when its field is above / below / equal to the
threshold for at least `duration` (judged on device timestamps, so a buffered upload is judged
as it happened), is *updated* when the value gets worse, and clears only once the value is back
past `clear` (hysteresis: a value hovering at the threshold does not flap). A device going silent
raises the built-in `silent` alarm; its next reading clears it.

Every event (raised, updated, cleared, acknowledged) is written to InfluxDB (measurement
`alarm_events`) and replayed at start, so active alarms and acknowledgements survive a restart.
Only duration timers still pending are lost: they start again from the next reading.

Memory is bounded: every active alarm (at most devices x rules) and the `history` newest cleared
ones are kept, InfluxDB keeps the rest; events waiting for InfluxDB are bounded in bytes
(`Outbox`), the oldest dropped past it, counted and logged. Those that can wait — the silent
devices' alarms, at start and as devices fall silent — wait while the outbox is half full and
InfluxDB takes its events (api.live.service), so a storm of them is stored, not dropped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import math
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from api.core.contract import Contract
from api.core.readings import Reading
from api.core.times import NS_PER_S, format_rfc3339, now_ns, parse_rfc3339
from api.live.hub import Event, Hub
from common.errors import InfluxError, InfluxRejected
from common.influx import REFUSES_LINES, AsyncInfluxClient, InfluxConfig, Series
from device_profiles import AlarmOp, AlarmRule, Severity
from wire.lineproto import line, one_line
from wire.retention import policy_of, qualified

logger = logging.getLogger(__name__)

MEASUREMENT = "alarm_events"
# Starts of one device and rule whose lives are counted: a signal is judged over the last day
# (api.foresight), so at most two days' starts come again; twice that for margin.
LIVES_KEPT = 4
# Lives of one start tried to name an alarm read back (a signal flapping all day long).
LIVES_SEARCH = 64
SILENT = AlarmRule(
    name="silent",
    field="_reporting",
    op=AlarmOp.EQUALS,
    threshold="silent",
    severity=Severity.WARNING,
    description="no reading for silent_after x the profile's reporting interval",
)


@dataclass(slots=True)
class Alarm:
    id: str
    device_id: str
    profile: str
    district: str
    rule: str
    severity: str
    field: str
    op: str
    threshold: str
    value: bool | int | float | str | None
    start_ns: int
    end_ns: int | None = None
    acknowledged_by: str | None = None
    acknowledged_ns: int | None = None
    note: str | None = None

    def acknowledged_as(self, other: Alarm) -> None:
        """`other`'s acknowledgement (who, when, the note) taken as this alarm's."""
        self.acknowledged_by = other.acknowledged_by
        self.acknowledged_ns = other.acknowledged_ns
        self.note = other.note

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "device_id": self.device_id,
            "profile": self.profile,
            "district": self.district,
            "rule": self.rule,
            "severity": self.severity,
            "field": self.field,
            "op": self.op,
            "threshold": self.threshold,
            "value": self.value,
            "state": "active" if self.end_ns is None else "cleared",
            "start": format_rfc3339(self.start_ns),
            "end": None if self.end_ns is None else format_rfc3339(self.end_ns),
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": None
            if self.acknowledged_ns is None
            else format_rfc3339(self.acknowledged_ns),
            "note": self.note,
        }


def alarm_id(device_id: str, rule: str, start_ns: int, life: int = 0) -> str:
    """The same for every replica judging the same readings; `life` tells apart alarms of one
    device, rule and start (a signal raised again the same day: its start is the day's)."""
    key = f"{device_id}\0{rule}\0{start_ns}" + (f"\0{life}" if life else "")
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def breaches(rule: AlarmRule, value: object) -> bool | None:
    """True/False; None if the value cannot be judged by the rule (wrong type)."""
    if rule.op is AlarmOp.EQUALS:
        if isinstance(rule.threshold, bool) or isinstance(value, bool):
            return type(value) is type(rule.threshold) and value == rule.threshold
        return value == rule.threshold
    number, threshold = _number(value), _number(rule.threshold)
    if number is None or threshold is None:
        return None
    return number > threshold if rule.op is AlarmOp.ABOVE else number < threshold


def clears(rule: AlarmRule, value: object) -> bool | None:
    if rule.op is AlarmOp.EQUALS:
        hit = breaches(rule, value)
        return None if hit is None else not hit
    number = _number(value)
    bound = _number(rule.clear if rule.clear is not None else rule.threshold)
    if number is None or bound is None:
        return None
    return number <= bound if rule.op is AlarmOp.ABOVE else number >= bound


def worse(rule: AlarmRule, new: object, old: object) -> bool:
    a, b = _number(new), _number(old)
    if a is None or b is None:
        return False
    return a > b if rule.op is AlarmOp.ABOVE else a < b


# What became of a line of the outbox: stored; refused by InfluxDB for good; dropped, the
# outbox past its bound (perhaps while a write that stored it was on its way).
Fate = Literal["stored", "refused", "dropped"]


# What a waiting line holds besides its UTF-8 bytes, estimated (not measured): the str object's
# header, its deque slot and, for some, a watcher's or a `then`'s dict entry and closure. Counted
# by characters alone, an acknowledgement's note of 1,000 Chinese characters or emoji held 2-4
# times what the bound said (found by a review).
LINE_OVERHEAD = 256


def _weight(text: str) -> int:
    return len(text.encode()) + LINE_OVERHEAD


class Outbox:
    """Alarm-event lines waiting to be stored, bounded in bytes: past the bound the oldest are
    dropped (counted, logged once per outage) rather than growing while InfluxDB is away.

    Lines leave from the front only, so a line is known by its number (`append`'s): whoever
    must answer only once one is stored (an acknowledgement) `watch`es it."""

    def __init__(self, max_bytes: int = 16 * 1024**2) -> None:
        self.max_bytes = max_bytes
        self._lines: deque[str] = deque()
        self.bytes = 0
        self.dropped = 0
        self._taken = 0  # lines that have left: the number of the front one
        # At most one per line still pending, taken out as it leaves or as its watcher gives up.
        self._watched: dict[int, asyncio.Future[Fate]] = {}
        self._then: dict[int, Callable[[Fate], None]] = {}  # at most one per line still pending

    def append(self, text: str, then: Callable[[Fate], None] | None = None) -> int:
        """Queue `text`; its number. `then` is called with its fate as it leaves."""
        number = self._taken + len(self._lines)
        self._lines.append(text)
        if then is not None:
            self._then[number] = then
        self.bytes += _weight(text)
        while self.bytes > self.max_bytes and len(self._lines) > 1:
            self._take("dropped")
            if not self.dropped:
                logger.error(
                    "alarm events waiting for InfluxDB passed %d bytes: dropping the oldest",
                    self.max_bytes,
                )
            self.dropped += 1
        return number

    def give_up(self) -> int:
        """Every line still waiting, taken out as dropped (counted); how many."""
        lost = len(self._lines)
        while self._lines:
            self._take("dropped")
        self.dropped += lost
        return lost

    def _take(self, fate: Fate) -> None:
        self.bytes -= _weight(self._lines.popleft())
        watcher = self._watched.pop(self._taken, None)
        then = self._then.pop(self._taken, None)
        self._taken += 1
        if watcher is not None and not watcher.done():
            watcher.set_result(fate)
        if then is not None:
            try:
                then(fate)
            except Exception:
                # A bug of the caller's: logged, and the outbox (and the writer storing it)
                # goes on, its bound and order kept.
                logger.exception("alarm event: what was to follow its %s line failed", fate)

    def watch(self, number: int) -> asyncio.Future[Fate]:
        """What will become of line `number`, still pending: asked right after its `append`,
        before the event loop runs anything else. `forget` it once no longer waited for."""
        if not self._taken <= number < self._taken + len(self._lines):
            raise ValueError(f"alarm event {number} is not pending")
        future: asyncio.Future[Fate] = asyncio.get_running_loop().create_future()
        self._watched[number] = future
        return future

    def forget(self, number: int) -> None:
        self._watched.pop(number, None)

    @property
    def watching(self) -> int:
        """Lines someone waits on."""
        return len(self._watched)

    def pending(self) -> list[str]:
        return list(self._lines)

    def done(self, lines: list[str], fate: Fate) -> None:
        """`lines`, the oldest pending ones, are done with: stored, or refused for good (some
        may have been dropped since)."""
        for text in lines:
            if self._lines and self._lines[0] is text:
                self._take(fate)

    def __len__(self) -> int:
        return len(self._lines)

    def __bool__(self) -> bool:
        return bool(self._lines)

    @property
    def crowded(self) -> bool:
        """Half full: producers that can wait do (api.live.service), leaving the other half for
        those that cannot."""
        return self.bytes * 2 >= self.max_bytes


@dataclass
class AlarmBook:
    contract: Contract
    hub: Hub
    history: int = 10_000  # cleared alarms kept in memory, the newest
    active: dict[tuple[str, str], Alarm] = field(default_factory=dict)  # (device, rule)
    pending: dict[tuple[str, str], int] = field(default_factory=dict)  # since (device time)
    by_id: dict[str, Alarm] = field(default_factory=dict)
    outbox: Outbox = field(default_factory=Outbox)  # lines to persist
    _cleared: OrderedDict[str, None] = field(default_factory=OrderedDict)  # oldest first
    # The next life of each (device, signal rule)'s newest LIVES_KEPT starts: a signal raised
    # again with a start it had (the same day) takes a life it never had. Looked up in
    # `by_id` only, a life let go of with the `history` was given again, and an id someone
    # holds (a ticket, a link, InfluxDB's events) named two alarms. Signals only: the other
    # alarms start at a reading's time or the clock's, which do not come again (a reading
    # delivered again is found in `by_id` while its alarm is among the newest). At most
    # devices x signal rules entries, ~300 B each.
    _lives: dict[tuple[str, str], dict[int, int]] = field(default_factory=dict)
    _last_ns: int = 0
    _silent_at_start: deque[str] = field(default_factory=deque)  # not yet raised
    _started_ns: int = 0
    # The stored alarms are in memory (replay): until then nothing is judged, or a live event
    # would raise again an alarm that is active already, under an id of its own.
    replayed: bool = True

    def __post_init__(self) -> None:
        self.hub.listeners.append(self.on_event)

    def _forget_old(self, alarm: Alarm) -> None:
        """`alarm` has cleared: kept among the newest cleared, the oldest beyond them let go."""
        self._cleared[alarm.id] = None
        self._cleared.move_to_end(alarm.id)
        while len(self._cleared) > self.history:
            old, _ = self._cleared.popitem(last=False)
            gone = self.by_id.get(old)
            if gone is not None and gone.end_ns is not None:
                del self.by_id[old]

    def _rule_of(self, alarm: Alarm) -> AlarmRule | None:
        """The profile rule `alarm` was raised by; None for `silent` and a signal's."""
        profile = self.contract.profiles.get(alarm.profile)
        rules = profile.alarms if profile is not None else ()
        return next((r for r in rules if r.name == alarm.rule), None)

    def _is_signal(self, alarm: Alarm) -> bool:
        """Whether `alarm` is a signal's (api.foresight): neither `silent` nor a profile rule."""
        return alarm.rule != SILENT.name and self._rule_of(alarm) is None

    def _next_life(self, key: tuple[str, str], start_ns: int, life: int) -> None:
        """`life` is the next of `start_ns` for `key` (device, rule): its newest start."""
        starts = self._lives.setdefault(key, {})
        starts.pop(start_ns, None)
        starts[start_ns] = life
        while len(starts) > LIVES_KEPT:
            del starts[next(iter(starts))]

    def _lived(self, alarm: Alarm) -> None:
        """A signal's alarm read back (replay): its life counted, as if this process had raised
        it, so that a life of its start left behind with the history is not given again after a
        restart. Its life is found by its id (at most LIVES_SEARCH tried)."""
        key = (alarm.device_id, alarm.rule)
        for life in range(LIVES_SEARCH):
            if alarm_id(*key, alarm.start_ns, life) == alarm.id:
                known = self._lives.get(key, {}).get(alarm.start_ns, 0)
                self._next_life(key, alarm.start_ns, max(known, life + 1))
                return

    def _life(self, device_id: str, rule: str, start_ns: int, signal: bool) -> int:
        """A life of this start none of the device's alarms of `rule` had: after those in
        memory (replayed at start too) and, for a signal, those this process raised."""
        life = self._lives.get((device_id, rule), {}).get(start_ns, 0) if signal else 0
        while alarm_id(device_id, rule, start_ns, life) in self.by_id:
            life += 1
        if signal:
            self._next_life((device_id, rule), start_ns, life + 1)
        return life

    def _unique_ns(self) -> int:
        self._last_ns = max(now_ns(), self._last_ns + 1)
        return self._last_ns

    def _emit(self, kind: str, alarm: Alarm, then: Callable[[Fate], None] | None = None) -> int:
        """Queue the event's line and publish it; with `then`, publishing is left to it (called
        with the line's fate). The line's number in the outbox."""
        values: dict[str, bool | int | float | str] = {
            "alarm_id": alarm.id,
            "device_id": alarm.device_id,
            "field": alarm.field,
            "op": alarm.op,
            "threshold": alarm.threshold,
            "start": alarm.start_ns,
        }
        value = alarm.value
        if isinstance(value, bool):
            values["value_bool"] = value
        elif isinstance(value, int | float):
            values["value_num"] = float(value)
        elif isinstance(value, str):
            values["value_text"] = one_line(value)
        if alarm.end_ns is not None:
            values["end"] = alarm.end_ns
        if alarm.acknowledged_by is not None:
            values["acknowledged_by"] = one_line(alarm.acknowledged_by)
            values["acknowledged_at"] = alarm.acknowledged_ns or 0
        if alarm.note is not None:
            values["note"] = one_line(alarm.note)
        tags = {
            "event": kind,
            "rule": alarm.rule,
            "profile": alarm.profile,
            "district": alarm.district,
            "severity": alarm.severity,
        }
        text = line(MEASUREMENT, tags, values, self._unique_ns())
        if then is None:
            self._publish(kind, alarm)
        return self.outbox.append(text, then)

    def _publish(self, kind: str, alarm: Alarm) -> None:
        data = {"event": kind, "alarm": alarm.public()}
        self.hub.publish("alarm", alarm.profile, alarm.district, alarm.device_id, data)

    def _raise(
        self, rule: AlarmRule, device_id: str, value: Any, start_ns: int, signal: bool = False
    ) -> None:
        device = self.contract.device(device_id)
        if device is None:
            return
        # Not active (the caller knows): an earlier life of this start is cleared. Its own id,
        # or the new one would take the old one's place in the listings and in InfluxDB's
        # events (their acknowledgement, their end).
        life = self._life(device_id, rule.name, start_ns, signal)
        alarm = Alarm(
            id=alarm_id(device_id, rule.name, start_ns, life),
            device_id=device_id,
            profile=device.profile,
            district=device.district,
            rule=rule.name,
            severity=rule.severity.value,
            field=rule.field,
            op=rule.op.value,
            threshold=str(rule.threshold).lower()
            if isinstance(rule.threshold, bool)
            else str(rule.threshold),
            value=value,
            start_ns=start_ns,
        )
        self.active[(device_id, rule.name)] = alarm
        self.by_id[alarm.id] = alarm
        self._emit("raised", alarm)

    def _clear(self, key: tuple[str, str], end_ns: int, value: Any) -> None:
        alarm = self.active.pop(key)
        alarm.end_ns = max(end_ns, alarm.start_ns)
        alarm.value = value
        self._emit("cleared", alarm)
        self._forget_old(alarm)

    def evaluate(self, device_id: str, profile: str, time_ns: int, values: dict[str, Any]) -> None:
        for rule in self.contract.profiles[profile].alarms:
            if rule.field not in values:
                continue
            value, key = values[rule.field], (device_id, rule.name)
            alarm = self.active.get(key)
            if alarm is not None:
                if clears(rule, value):
                    self._clear(key, time_ns, value)
                elif worse(rule, value, alarm.value):
                    alarm.value = value
                    self._emit("updated", alarm)
                continue
            hit = breaches(rule, value)
            if hit is None:
                continue
            if not hit:
                self.pending.pop(key, None)
                continue
            since = self.pending.setdefault(key, time_ns)
            since = min(since, time_ns)
            self.pending[key] = since
            if time_ns - since >= int(rule.duration * NS_PER_S):
                self.pending.pop(key, None)
                self._raise(rule, device_id, value, since)

    def judge(
        self, rule: AlarmRule, device_id: str, value: Any, breached: bool, time_ns: int
    ) -> None:
        """A signal computed in the background (api.foresight) judged against a profile's
        signal rule: raise when breached and not yet active, clear once no longer breached."""
        if not self.replayed:
            return  # the next round judges it again
        key = (device_id, rule.name)
        alarm = self.active.get(key)
        if alarm is None and breached:
            self._raise(rule, device_id, value, time_ns, signal=True)
        elif alarm is not None and not breached:
            self._clear(key, time_ns, value)
        elif alarm is not None and value != alarm.value:
            alarm.value = value
            self._emit("updated", alarm)

    def on_event(self, event: Event) -> None:
        if not self.replayed:
            return  # reconcile judges the state as it is once they are
        if event.kind == "reading":
            self.evaluate(
                event.device_id,
                event.profile,
                parse_rfc3339(event.data["time"]),
                event.data["values"],
            )
        elif event.kind == "reporting":
            key = (event.device_id, SILENT.name)
            if event.data["to"] == "silent" and key not in self.active:
                self._raise(SILENT, event.device_id, event.data.get("last_seen"), now_ns())
            elif event.data["from"] == "silent" and key in self.active:
                self._clear(key, now_ns(), event.data.get("last_seen"))

    def silent_at_start(self, device_ids: list[str], now: int) -> None:
        """Devices already silent when the API starts never *become* silent: raised for them
        by `raise_silent_at_start`, some at a time (see there). Held as the registry's own id
        strings: 8 bytes a device in the deque."""
        self._silent_at_start.extend(device_ids)
        self._started_ns = now

    def raise_silent_at_start(self, still_silent: Callable[[str], bool], limit: int) -> bool:
        """The `silent` alarms of up to `limit` devices silent at start (and still silent);
        whether any were left to look at. A city whose devices all fell silent while the API
        was down (an ingest outage) would otherwise put a million events in the outbox at
        once: 150 MB against its 16, the oldest dropped while InfluxDB was well."""
        waiting = self._silent_at_start
        if not waiting:
            return False
        for _ in range(min(limit, len(waiting))):
            device_id = waiting.popleft()
            if (device_id, SILENT.name) not in self.active and still_silent(device_id):
                self._raise(SILENT, device_id, None, self._started_ns)
        return True

    def reconcile(
        self,
        newest: Callable[[str], Reading | None],
        silent: Callable[[str], bool],
        now: int,
    ) -> None:
        """The active alarms replayed, judged against the state as it is: a device that came
        back or a value back in range while no API judged it (away, restarting, a clear not
        stored before it stopped) clears its alarm now, not at some later reading that may
        never cross the threshold again. Signals are judged by their next round."""
        for (device_id, rule_name), alarm in list(self.active.items()):
            key = (device_id, rule_name)
            if rule_name == SILENT.name:
                if silent(device_id):
                    continue  # first: a city restarted after an outage has many, and it is cheap
                latest = newest(device_id)
                # Back: a reading since it fell silent. Not one with no reading left in the
                # state's lookback ("never", not silent by the state's word): still gone.
                if latest is not None and latest.time_ns > alarm.start_ns:
                    self._clear(key, latest.time_ns, None)
                continue
            rule = self._rule_of(alarm)
            latest = newest(device_id)
            if rule is None or latest is None or latest.time_ns < alarm.start_ns:
                continue
            value = latest.values.get(rule.field)
            if value is not None and clears(rule, value):
                self._clear(key, latest.time_ns, value)

    def acknowledge(self, alarm: Alarm, by: str, note: str | None) -> int:
        """Queue its event; the event's number in the outbox. The alarm takes it, and live
        clients hear of it, once it is stored: a person's act, its author told it is done only
        then (api.live.alarm_queries), and never shown done — on a screen, in the events of the
        alarm meanwhile, in a listing — before, nor at all if it is refused or dropped."""
        acked = dataclasses.replace(alarm, acknowledged_by=by, acknowledged_ns=now_ns(), note=note)

        def then(fate: Fate) -> None:
            if fate != "stored":
                return
            alarm.acknowledged_as(acked)
            self._publish("acknowledged", alarm)  # as it is now: updated or cleared meanwhile

        return self._emit("acknowledged", acked, then)

    # --- persistence ---

    def replay(self, found: Iterable[Series]) -> None:
        """Rebuild from stored events (oldest first, in as many calls as the answer has
        chunks): the last event of each alarm wins, but for its acknowledgement, never taken
        back within an alarm's life: an event queued while one was being stored (a clear)
        carries none or an older one, so the newest acknowledged is kept. A `raised` event
        starts a life of its own (a signal's id comes back when it is raised again the same
        day): it takes nothing from before."""
        for row in (row for series in found for row in series.rows()):
            aid = row.get("alarm_id")
            device = self.contract.device(str(row.get("device_id")))
            if not isinstance(aid, str) or device is None:
                continue
            value = row.get("value_num")
            if value is None:
                value = row.get("value_bool")
            if value is None:
                value = row.get("value_text")
            alarm = Alarm(
                id=aid,
                device_id=device.device_id,
                profile=str(row.get("profile")),
                district=str(row.get("district")),
                rule=str(row.get("rule")),
                severity=str(row.get("severity")),
                field=str(row.get("field")),
                op=str(row.get("op")),
                threshold=str(row.get("threshold")),
                value=value,
                start_ns=int(row.get("start") or 0),
                end_ns=int(row["end"]) if row.get("end") is not None else None,
                acknowledged_by=row.get("acknowledged_by"),
                acknowledged_ns=int(row["acknowledged_at"]) if row.get("acknowledged_at") else None,
                note=row.get("note"),
            )
            before = self.by_id.get(aid)
            if (
                before is not None
                and row.get("event") != "raised"
                and (before.acknowledged_ns or 0) > (alarm.acknowledged_ns or 0)
            ):
                alarm.acknowledged_as(before)
            self.by_id[aid] = alarm
            if row.get("event") == "raised" and self._is_signal(alarm):
                self._lived(alarm)
            key = (alarm.device_id, alarm.rule)
            if alarm.end_ns is None:
                self.active[key] = alarm
            else:
                if key in self.active and self.active[key].id == aid:
                    del self.active[key]
                self._forget_old(alarm)
            self._last_ns = max(self._last_ns, int(row["time"]))


EVENTS_CHUNK = 5_000  # events parsed at a time


async def load_events(influx: AsyncInfluxClient, since_ns: int) -> AsyncIterator[list[Series]]:
    """The events stored since `since_ns`, oldest first, a chunk at a time: a city's month of
    events is not parsed whole (100,000 silent lamps' alarms are 16 MB of JSON), and asked
    uncompressed, one series of many rows (common.influx's query_chunks): at 100,000 events
    the read and parse took 0.55 s instead of 0.9 s (measured by hand), part of a restart."""
    async for series in influx.query_chunks(
        f"SELECT * FROM {qualified(MEASUREMENT)} WHERE time >= $since ORDER BY time ASC",  # noqa: S608
        {"since": since_ns},
        epoch="ns",
        chunk_size=EVENTS_CHUNK,
        compressed=False,
    ):
        yield series


class Writer:
    """Writes the book's outbox to InfluxDB; keeps it on failure and retries, but for lines
    InfluxDB refuses (a field-type conflict, a line too large): those are found by halving,
    dropped and counted, because retried they would hold back every event after them until
    the outbox overflowed."""

    def __init__(
        self,
        config: InfluxConfig,
        book: AlarmBook,
        scrub: Callable[[str], str],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._book = book
        self._scrub = scrub
        self._influx = AsyncInfluxClient(config, transport=transport)
        self.storing = True  # the last write of events succeeded (or none was tried)
        self.refused = 0  # events InfluxDB refused, dropped

    async def flush(self) -> None:
        outbox = self._book.outbox
        if not outbox:
            return
        try:
            await self._store(outbox.pending())
        except InfluxError as exc:
            self.storing = False
            logger.warning("alarm events not stored yet, will retry: %s", self._scrub(str(exc)))
            return
        self.storing = True

    async def _store(self, lines: list[str]) -> None:
        """`lines`, the oldest of the outbox, stored or refused, and each part taken out of the
        outbox as soon as it is: halves are done front to back, and an outage halfway leaves
        only what is not done yet (a refused event is not sent, nor counted, again)."""
        outbox = self._book.outbox
        try:
            await self._influx.write("\n".join(lines).encode(), policy=policy_of(MEASUREMENT))
        except InfluxRejected as exc:
            if exc.status not in REFUSES_LINES:
                raise
            if len(lines) == 1:
                # Dropped for good: the same line is refused the same way again.
                self.refused += 1
                logger.error(
                    "alarm event refused by InfluxDB, dropped: %s: %s",
                    self._scrub(str(exc)),
                    self._scrub(lines[0][:200]),
                )
                outbox.done(lines, "refused")
                return
            half = len(lines) // 2
            await self._store(lines[:half])
            await self._store(lines[half:])
            return
        outbox.done(lines, "stored")

    async def run(self, interval: float = 0.2) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.flush()

    async def aclose(self) -> None:
        await self.flush()
        await self._influx.aclose()
        lost = self._book.outbox.give_up()
        if lost:
            # Not "will retry": the process is ending. Counted (alarm_events_dropped), and said.
            logger.error(
                "stopping with %d alarm event(s) InfluxDB has not stored: lost (raises come "
                "back at the next start while their condition holds; clears and "
                "acknowledgements do not)",
                lost,
            )
