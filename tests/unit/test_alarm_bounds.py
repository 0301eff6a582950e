"""The API's alarm memory is bounded: a flapping device cannot grow it, nor can an InfluxDB
outage grow the events waiting to be stored (issue 10, 7); a storm of silent devices is emitted
some at a time, for the outbox to be written rather than overflow."""

from __future__ import annotations

import httpx
import pytest

from api.core.contract import Contract
from api.core.readings import Reading
from api.live.alarms import LINE_OVERHEAD, AlarmBook, Outbox, Writer
from api.live.hub import Event, Hub
from api.live.state import LiveState
from common.influx import InfluxConfig, Series
from device_profiles import (
    DEFAULT_REGISTRY,
    AlarmOp,
    AlarmRule,
    Severity,
    load_profiles,
    load_registry,
)
from wire.lineproto import parse_line

PROFILES = load_profiles()
CONTRACT = Contract.build(PROFILES, load_registry(DEFAULT_REGISTRY, PROFILES))
LAMP = next(d for d in CONTRACT.registry.devices.values() if d.profile == "streetlight")
S = 1_000_000_000
# A signal's rule (api.foresight): its alarm starts at the day's start.
LIT_BY_DAY = AlarmRule(
    name="lit_by_day", field="lit_by_day", op=AlarmOp.ABOVE, threshold=0.1,
    severity=Severity.WARNING,
)  # fmt: skip


def test_a_flapping_pole_keeps_only_the_newest_cleared_alarms() -> None:
    book = AlarmBook(CONTRACT, Hub(100), history=3)
    for n in range(1000):  # tilted, upright, tilted ...: an alarm raised and cleared each time
        tilt = 10.0 if n % 2 == 0 else 0.0
        book.evaluate(LAMP.device_id, "streetlight", n * S, {"tiltAngle": tilt})
    assert not book.active
    assert len(book.by_id) == 3
    newest = sorted(book.by_id.values(), key=lambda a: a.start_ns)
    assert [a.start_ns for a in newest] == [994 * S, 996 * S, 998 * S]


@pytest.mark.anyio
async def test_an_acknowledgement_is_the_alarm_s_and_heard_only_once_stored() -> None:
    hub = Hub(100)
    heard: list[tuple[str, str | None, str]] = []

    def listen(event: Event) -> None:
        if event.kind == "alarm":
            alarm = event.data["alarm"]
            heard.append((event.data["event"], alarm["acknowledged_by"], alarm["state"]))

    hub.listeners.append(listen)
    book = AlarmBook(CONTRACT, hub)
    book.evaluate(LAMP.device_id, "streetlight", 0, {"tiltAngle": 10.0})
    [alarm] = book.active.values()
    book.acknowledge(alarm, "crew", "refused, this one")
    book.outbox.done(book.outbox.pending(), "refused")
    assert alarm.acknowledged_by is None and len(heard) == 1  # refused: never the alarm's
    book.acknowledge(alarm, "crew", "on it")
    assert alarm.acknowledged_by is None  # not yet stored
    book.evaluate(LAMP.device_id, "streetlight", S, {"tiltAngle": 0.0})  # cleared meanwhile
    assert heard == [("raised", None, "active"), ("cleared", None, "cleared")]
    book.outbox.done(book.outbox.pending(), "stored")
    assert (alarm.acknowledged_by, alarm.note) == ("crew", "on it")
    assert heard[-1] == ("acknowledged", "crew", "cleared")  # the alarm as it is now


def _events(*rows: tuple[int, str, str | None, int | None, int | None]) -> list[Series]:
    """Stored events of one alarm of LAMP: (time, event, acknowledged_by, _at, end)."""
    columns = ("time", "alarm_id", "device_id", "profile", "district", "rule", "severity")
    columns += ("field", "op", "threshold", "start", "event", "end")
    columns += ("acknowledged_by", "acknowledged_at", "note")
    fixed = ("a1", LAMP.device_id, "streetlight", LAMP.district, "pole_tilted", "warning")
    fixed += ("tiltAngle", "above", "5.0", 0)
    values = tuple(
        (t, *fixed, event, end, by, at, f"by {by}" if by else None)
        for t, event, by, at, end in rows
    )
    return [Series("alarm_events", {}, columns, values)]


def test_replay_keeps_an_alarm_s_newest_acknowledgement_within_its_life_only() -> None:
    book = AlarmBook(CONTRACT, Hub(100))
    # Acknowledged by A, then B; a clear queued while B was being stored carries A.
    book.replay(_events((1, "raised", None, None, None), (2, "acknowledged", "A", 2, None)))
    book.replay(_events((3, "acknowledged", "B", 3, None), (4, "cleared", "A", 2, 4)))
    alarm = book.by_id["a1"]
    assert (alarm.acknowledged_by, alarm.note, alarm.end_ns) == ("B", "by B", 4)
    # The same id raised again (a signal, the same day): nobody has acknowledged this one.
    book.replay(_events((5, "raised", None, None, None), (6, "updated", None, None, None)))
    again = book.by_id["a1"]
    assert again.acknowledged_by is None and again.end_ns is None
    assert book.active[(LAMP.device_id, "pole_tilted")] is again


def test_a_signal_raised_again_the_same_day_is_an_alarm_of_its_own() -> None:
    """A signal's alarm starts at its day: raised, cleared and raised again that day, the two
    must not share an id (the second took the first's place, its events mixed with it)."""
    rule = LIT_BY_DAY
    book = AlarmBook(CONTRACT, Hub(100))
    day = 1_800_000_000 * S
    book.judge(rule, LAMP.device_id, 0.5, True, day)
    first = book.active[(LAMP.device_id, "lit_by_day")]
    book.judge(rule, LAMP.device_id, 0.0, False, day)
    book.judge(rule, LAMP.device_id, 0.6, True, day)
    second = book.active[(LAMP.device_id, "lit_by_day")]
    assert second.id != first.id
    assert book.by_id[first.id].end_ns == day and book.by_id[second.id].end_ns is None
    assert len(book.outbox) == 3  # raised, cleared, raised: each its own alarm's


def test_a_signal_raised_again_after_its_first_life_was_let_go_has_an_id_of_its_own() -> None:
    """The earlier life left memory (more cleared alarms than `history` since): its id is
    still not given again, or a ticket or link holding it would name the new alarm."""
    rule = LIT_BY_DAY
    book = AlarmBook(CONTRACT, Hub(100), history=2)
    day = 1_800_000_000 * S
    book.judge(rule, LAMP.device_id, 0.5, True, day)
    first = book.active[(LAMP.device_id, "lit_by_day")].id
    book.judge(rule, LAMP.device_id, 0.0, False, day)
    for n in range(6):  # a pole tilting and standing again: its cleared alarms push it out
        book.evaluate(LAMP.device_id, "streetlight", n * S, {"tiltAngle": 10.0 * (n % 2 == 0)})
    assert first not in book.by_id
    ids = {first}
    for value in (0.6, 0.7):
        book.judge(rule, LAMP.device_id, value, True, day)
        again = book.active[(LAMP.device_id, "lit_by_day")].id
        assert again not in ids
        ids.add(again)
        book.judge(rule, LAMP.device_id, 0.0, False, day)


def test_after_a_restart_a_signal_s_lives_let_go_are_not_given_again() -> None:
    """The lives are counted from the events read back too: restarted, the API does not give
    a signal raised again the same day an id of a life already let go of with the history."""
    rule = LIT_BY_DAY
    before = AlarmBook(CONTRACT, Hub(100), history=2)
    day = 1_800_000_000 * S
    ids = set()
    for value in (0.5, 0.6):
        before.judge(rule, LAMP.device_id, value, True, day)
        ids.add(before.active[(LAMP.device_id, "lit_by_day")].id)
        before.judge(rule, LAMP.device_id, 0.0, False, day)
    for n in range(6):  # cleared alarms enough to push both lives out of any history of 2
        before.evaluate(LAMP.device_id, "streetlight", n * S, {"tiltAngle": 10.0 * (n % 2 == 0)})
    restarted = AlarmBook(CONTRACT, Hub(100), history=2)
    restarted.replay(_stored(before.outbox.pending()))
    assert len(ids) == 2 and not ids & set(restarted.by_id)
    restarted.judge(rule, LAMP.device_id, 0.7, True, day)
    assert restarted.active[(LAMP.device_id, "lit_by_day")].id not in ids


def _stored(lines: list[str]) -> list[Series]:
    """Outbox lines as InfluxDB answers them back: one series, a column per tag and field."""
    points = [parse_line(text) for text in lines]
    columns = sorted({key for p in points for key in (*p.tags, *p.fields)})
    values = [(p.time_ns, *({**p.tags, **p.fields}.get(c) for c in columns)) for p in points]
    return [Series("alarm_events", {}, ("time", *columns), tuple(values))]


def test_reconcile_clears_a_silent_alarm_only_for_a_device_heard_from_since() -> None:
    book = AlarmBook(CONTRACT, Hub(100))
    book.on_event(
        Event(
            "reporting",
            "streetlight",
            LAMP.district,
            LAMP.device_id,
            {"from": "on_time", "to": "silent", "last_seen": None},
            1,
        )
    )
    [alarm] = book.active.values()
    before = Reading(time_ns=alarm.start_ns - S, values={})
    for newest in (None, before):  # nothing in the state's lookback; nothing since: still gone
        book.reconcile(lambda _d, r=newest: r, lambda _d: False, alarm.start_ns + 10 * S)
        assert book.active and alarm.end_ns is None
    back = Reading(time_ns=alarm.start_ns + S, values={"powerState": "on"})
    book.reconcile(lambda _d: back, lambda _d: False, alarm.start_ns + 10 * S)
    assert not book.active and alarm.end_ns == back.time_ns


def test_an_active_alarm_is_never_let_go() -> None:
    book = AlarmBook(CONTRACT, Hub(100), history=0)
    book.evaluate(LAMP.device_id, "streetlight", 0, {"tiltAngle": 10.0})
    [alarm] = book.active.values()
    assert book.by_id == {alarm.id: alarm}


def test_the_outbox_drops_its_oldest_past_its_bytes_and_counts_them() -> None:
    outbox = Outbox(max_bytes=10 * (100 + LINE_OVERHEAD))
    lines = [f"alarm_events,n={n} v=1i {n}".ljust(100) for n in range(50)]
    for text in lines:
        outbox.append(text)
    assert outbox.bytes <= outbox.max_bytes
    assert outbox.dropped == 40
    assert outbox.pending() == lines[40:]
    outbox.done(outbox.pending()[:5], "stored")
    assert outbox.pending() == lines[45:]


@pytest.mark.anyio
async def test_a_watched_line_dropped_past_the_bound_is_told_so_and_numbers_follow_the_front() -> (
    None
):
    outbox = Outbox(max_bytes=2 * (400 + LINE_OVERHEAD) + 100)
    first = outbox.append("a" * 400)
    fate = outbox.watch(first)
    second = outbox.append("b" * 400)
    assert second == first + 1 and not fate.done()
    third = outbox.append("c" * 400)  # past its bytes: the oldest, the watched one, dropped
    assert fate.result() == "dropped"
    with pytest.raises(ValueError, match="not pending"):
        outbox.watch(first)
    later = outbox.watch(third)
    outbox.done(outbox.pending()[:1], "stored")  # the second: the third still pending
    assert not later.done()
    outbox.done(outbox.pending(), "stored")
    assert later.result() == "stored"
    assert outbox.append("d") == third + 1  # numbers go on from the front, nothing pending


@pytest.mark.anyio
async def test_the_outbox_counts_bytes_not_characters_and_gives_up_what_is_left() -> None:
    """A note of Chinese characters is three bytes each (counted as one each, the bound held
    2-4 times what it said); at stop, what is left is dropped, counted and told its fate."""
    outbox = Outbox(max_bytes=10_000)
    watched = outbox.watch(outbox.append("设备" * 500))  # 1,000 characters, 3,000 bytes
    assert outbox.bytes == 3000 + LINE_OVERHEAD
    outbox.append("x")
    assert outbox.give_up() == 2 and outbox.dropped == 2
    assert watched.result() == "dropped" and not outbox and outbox.bytes == 0


def test_the_outbox_is_crowded_from_half_its_bytes() -> None:
    outbox = Outbox(max_bytes=2 * (500 + LINE_OVERHEAD))
    outbox.append("x" * 499)
    assert not outbox.crowded
    outbox.append("x")
    assert outbox.crowded
    outbox.done(outbox.pending(), "stored")
    assert not outbox.crowded


def test_devices_silent_at_start_are_raised_some_at_a_time_and_only_if_still_silent() -> None:
    lamps = [d.device_id for d in CONTRACT.registry.devices.values() if d.profile == "streetlight"]
    assert len(lamps) >= 5
    book = AlarmBook(CONTRACT, Hub(100))
    book.silent_at_start(lamps[:5], 7 * S)
    assert not book.active and not book.outbox  # nothing yet: the caller paces them
    heard = {lamps[2]}  # a reading since: no longer silent

    def still_silent(device_id: str) -> bool:
        return device_id not in heard

    assert book.raise_silent_at_start(still_silent, 2)
    assert sorted(device for device, _ in book.active) == sorted(lamps[:2])
    assert book.raise_silent_at_start(still_silent, 2)
    assert book.raise_silent_at_start(still_silent, 2)
    assert not book.raise_silent_at_start(still_silent, 2)
    assert sorted(device for device, _ in book.active) == sorted([lamps[0], lamps[1], *lamps[3:5]])
    assert {a.start_ns for a in book.active.values()} == {7 * S}
    assert len(book.outbox) == 4


def test_the_reporting_transitions_due_are_emitted_at_most_limit_at_a_time() -> None:
    lamps = [d.device_id for d in CONTRACT.registry.devices.values() if d.profile == "streetlight"]
    state = LiveState(CONTRACT, Hub(100), late_after=1.5, silent_after=3.0)
    state.load("streetlight", [(lamp, Reading(0, {"powerState": "on"})) for lamp in lamps[:5]], 0)
    state.baseline(0)
    events: list[Event] = []
    state.hub.listeners.append(events.append)
    later = 200 * S  # past 3 x the streetlights' 60 s: silent
    assert state.tick(later, limit=2)
    assert len(events) == 2
    assert state.tick(later, limit=2)
    assert not state.tick(later, limit=2)
    assert [e.data["to"] for e in events] == ["silent"] * 5
    assert sorted(e.device_id for e in events) == sorted(lamps[:5])
    assert not state.tick(later)


@pytest.mark.anyio
async def test_a_refused_event_leaves_the_outbox_and_an_outage_resends_only_the_rest() -> None:
    """InfluxDB refuses one event (a field-type conflict), then is away while the halving goes
    on: the next flush sends only what was not stored, and the refused event is neither sent
    nor counted again."""
    bad = 'alarm_events,alarm_id=a1 value="text" 1'
    lines = [f"alarm_events,alarm_id=a{n} value={n}i {n}" for n in range(4)]
    lines[1] = bad
    bodies: list[list[str]] = []
    away = [True]

    def influx(request: httpx.Request) -> httpx.Response:
        body = request.content.decode().split("\n")
        bodies.append(body)
        if bad in body:
            return httpx.Response(400, json={"error": "partial write: field type conflict"})
        if lines[2] in body and away[0]:
            away[0] = False
            return httpx.Response(503, json={"error": "away"})
        return httpx.Response(204)

    book = AlarmBook(CONTRACT, Hub(100))
    fates = [book.outbox.watch(book.outbox.append(text)) for text in lines]
    writer = Writer(InfluxConfig(), book, lambda text: text, httpx.MockTransport(influx))
    try:
        await writer.flush()  # [0 1 2 3] refused; [0 1]: [0] stored, [1] refused; [2 3] away
        assert not writer.storing and writer.refused == 1
        assert book.outbox.pending() == lines[2:]
        assert [f.result() for f in fates[:2]] == ["stored", "refused"]
        assert not any(f.done() for f in fates[2:])  # not stored: still waited for
        await writer.flush()
        assert writer.storing and writer.refused == 1 and not book.outbox
        assert [f.result() for f in fates[2:]] == ["stored", "stored"]
    finally:
        await writer.aclose()
    assert bodies[-1] == lines[2:]
    assert sum(bad in body for body in bodies) == 3  # the whole, its half, and itself: once
