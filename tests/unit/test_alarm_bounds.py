"""The API's alarm memory is bounded: a flapping device cannot grow it, nor can an InfluxDB
outage grow the events waiting to be stored (issue 10, 7)."""

from __future__ import annotations

from api.core.contract import Contract
from api.live.alarms import AlarmBook, Outbox
from api.live.hub import Hub
from device_profiles import DEFAULT_REGISTRY, load_profiles, load_registry

PROFILES = load_profiles()
CONTRACT = Contract.build(PROFILES, load_registry(DEFAULT_REGISTRY, PROFILES))
LAMP = next(d for d in CONTRACT.registry.devices.values() if d.profile == "streetlight")
S = 1_000_000_000


def test_a_flapping_pole_keeps_only_the_newest_cleared_alarms() -> None:
    book = AlarmBook(CONTRACT, Hub(100), history=3)
    for n in range(1000):  # tilted, upright, tilted ...: an alarm raised and cleared each time
        tilt = 10.0 if n % 2 == 0 else 0.0
        book.evaluate(LAMP.device_id, "streetlight", n * S, {"tiltAngle": tilt})
    assert not book.active
    assert len(book.by_id) == 3
    newest = sorted(book.by_id.values(), key=lambda a: a.start_ns)
    assert [a.start_ns for a in newest] == [994 * S, 996 * S, 998 * S]


def test_an_active_alarm_is_never_let_go() -> None:
    book = AlarmBook(CONTRACT, Hub(100), history=0)
    book.evaluate(LAMP.device_id, "streetlight", 0, {"tiltAngle": 10.0})
    [alarm] = book.active.values()
    assert book.by_id == {alarm.id: alarm}


def test_the_outbox_drops_its_oldest_past_its_bytes_and_counts_them() -> None:
    outbox = Outbox(max_bytes=1000)
    lines = [f"alarm_events,n={n} v=1i {n}".ljust(100) for n in range(50)]
    for text in lines:
        outbox.append(text)
    assert outbox.bytes <= 1000
    assert outbox.dropped == 40
    assert outbox.pending() == lines[40:]
    outbox.done(outbox.pending()[:5])
    assert outbox.pending() == lines[45:]
