"""The hub's ring of recent events (bounded in count) and a stream resumed with Last-Event-ID:
the events after the id, or `reset` when they are gone or the id is not of this process."""

from __future__ import annotations

import pytest

from api.core.tokens import Principal, Scope
from api.live.hub import Hub
from api.live.stream import RESET, missed

CITY = Principal(name="city", scope=Scope.CITY)
LIGHTS = Principal(name="lights", scope=Scope.DEPARTMENT, profiles=frozenset({"streetlight"}))


def _hub(replay: int) -> tuple[Hub, list[int]]:
    hub = Hub(queue_size=100, replay=replay)
    ids = [
        hub.publish("reading", profile, "North", f"D{n}", {"n": n}).seq
        for n, profile in enumerate(["streetlight", "water_pipe"] * 5)
    ]
    return hub, ids


def test_ids_follow_each_other_and_start_after_any_earlier_process() -> None:
    _, earlier_ids = _hub(100)
    hub, ids = _hub(100)
    assert ids == list(range(ids[0], ids[0] + 10))
    assert ids[0] > earlier_ids[-1]  # microseconds since the epoch at start
    assert hub.last_id == ids[-1]


@pytest.mark.anyio
async def test_since_replays_what_is_kept_and_no_more() -> None:
    hub, ids = _hub(replay=4)
    assert [e.seq for e in hub.since(ids[6]) or []] == ids[7:]
    assert [e.seq for e in hub.since(ids[5]) or []] == ids[6:]  # the oldest kept
    assert hub.since(ids[4]) is None  # ids[5] is no longer kept
    assert hub.since(ids[-1]) == []
    assert hub.since(ids[-1] + 1) is None  # not an id this process gave out


@pytest.mark.anyio
async def test_a_resumed_stream_gets_the_missed_events_of_its_scope_only() -> None:
    hub, ids = _hub(replay=100)
    city = hub.subscribe(lambda e: CITY.sees(e.profile, e.district))
    lights = hub.subscribe(lambda e: LIGHTS.sees(e.profile, e.district))
    frames = missed(hub, city, str(ids[2]))
    assert [int(f.split(b"\nid: ")[1].split(b"\n")[0]) for f in frames] == ids[3:]
    frames = missed(hub, lights, str(ids[2]))
    assert len(frames) == 3 and all(b'"streetlight"' in f for f in frames)
    assert missed(hub, city, None) == []
    assert missed(hub, city, "not-a-number") == [RESET]
    assert missed(hub, city, "1") == [RESET]


@pytest.mark.anyio
async def test_an_event_a_listener_publishes_reaches_clients_after_the_one_that_caused_it() -> None:
    """An alarm raised by a reading (the alarm book listens to the hub) gets the next id; a
    client must get the reading first, or, overflowing just then, it resumes from the alarm's
    id and never gets the reading (found by a review)."""
    hub = Hub(queue_size=100, replay=100)
    client = hub.subscribe(lambda _event: True)

    def alarms(event: object) -> None:
        if getattr(event, "kind", "") == "reading":
            hub.publish("alarm", "streetlight", "North", "D1", {})

    hub.listeners.append(alarms)
    hub.publish("reading", "streetlight", "North", "D1", {"n": 1})
    got = [client.queue.get_nowait() for _ in range(client.queue.qsize())]
    assert [e.kind for e in got] == ["reading", "alarm"]
    assert [e.seq for e in got] == sorted(e.seq for e in got)
