"""Alarms from the shipped profile rules, evaluated on the state feed against the real servers:
duration, update, hysteresis, clear, acknowledge, silent devices, survival of a restart, and who
may see and acknowledge which alarm."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
import yaml

from api.core.contract import Contract
from api.core.tokens import hash_token
from api.live import alarms as alarms_module
from api.live.alarms import AlarmBook, Writer
from api.live.hub import Hub
from citysense.servers import LocalServers
from common.influx import InfluxClient, InfluxConfig
from device_profiles import DEFAULT_REGISTRY, load_profiles, load_registry
from simulators.city import write_city
from tests.support.influx import count, rows
from tests.support.polling import until
from tests.support.seeding import Point, line_protocol
from tests.support.state import fast_profiles, live_settings, stack_for
from tests.support.times import MIN, rfc3339

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_low_pressure_raises_after_its_duration_updates_and_clears_with_hysteresis(
    servers: LocalServers,
    influx: InfluxConfig,
    tmp_path: Path,
    topic_root: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The restart below replays the events two at a time: an alarm's events in several chunks.
    monkeypatch.setattr(alarms_module, "EVENTS_CHUNK", 2)
    t0 = time.time_ns() - 30 * MIN
    settings = live_settings(servers, influx, tmp_path, topic_root)
    async with stack_for(settings, servers) as st:

        async def alarms(state: str = "all") -> list[dict[str, object]]:
            body = (
                await st.client.get("/alarms", params={"state": state, "rule": "low_pressure"})
            ).json()
            return list(body["items"])

        # below 100 kPa, but not yet for the rule's 10 minutes: nothing
        await st.feed(("water_pipe", "WP-A1", "North", t0, {"pressure": 90.0}))
        await st.feed(("water_pipe", "WP-A1", "North", t0 + 5 * MIN, {"pressure": 85.0}))
        await until(
            lambda: any(
                e.kind == "reading" and e.data["values"] == {"pressure": 85.0} for e in st.events
            ),
            5,
            "readings",
        )
        assert await alarms() == []
        await st.feed(("water_pipe", "WP-A1", "North", t0 + 11 * MIN, {"pressure": 80.0}))

        async def raised() -> list[dict[str, object]]:
            return await alarms("active")

        [alarm] = await until(raised, 5, "the alarm")
        assert (alarm["device_id"], alarm["district"], alarm["severity"]) == (
            "WP-A1",
            "North",
            "critical",
        )
        assert alarm["value"] == 80.0 and alarm["end"] is None
        assert alarm["start"] == rfc3339(t0)  # when the condition began
        await st.feed(("water_pipe", "WP-A1", "North", t0 + 12 * MIN, {"pressure": 70.0}))
        await st.feed(
            ("water_pipe", "WP-A1", "North", t0 + 13 * MIN, {"pressure": 110.0})
        )  # < clear 120
        await until(
            lambda: any(
                e.kind == "reading" and e.data["values"] == {"pressure": 110.0} for e in st.events
            ),
            5,
            "",
        )
        [still] = await alarms("active")
        assert still["value"] == 70.0  # updated to the worst value, not cleared by 110
        # acknowledge: the city token would be read only; auth is off here (anonymous may)
        ack = await st.client.post(f"/alarms/{alarm['id']}/acknowledge", json={"note": "crew sent"})
        assert ack.status_code == 200 and ack.json()["acknowledged_by"] == "anonymous"
        await st.feed(("water_pipe", "WP-A1", "North", t0 + 14 * MIN, {"pressure": 125.0}))

        async def cleared() -> list[dict[str, object]]:
            return await alarms("cleared")

        [done] = await until(cleared, 5, "the clear")
        assert done["end"] == rfc3339(t0 + 14 * MIN) and done["note"] == "crew sent"
        kinds = [
            e.data["event"]
            for e in st.events
            if e.kind == "alarm" and e.data["alarm"]["rule"] == "low_pressure"
        ]
        assert kinds == ["raised", "updated", "acknowledged", "cleared"]
        assert (await st.client.post(f"/alarms/{alarm['id']}/acknowledge")).status_code == 409
        assert (await st.client.get("/alarms/nope")).status_code == 404
        # another one stays active across the restart below
        await st.feed(
            ("water_pipe", "WP-A2", "North", t0, {"pressure": 50.0}),
            ("water_pipe", "WP-A2", "North", t0 + 10 * MIN, {"pressure": 40.0}),
        )
        book = st.app.state.runtime.live.alarms
        await until(lambda: ("WP-A2", "low_pressure") in book.active, 5, "second alarm")
        second = book.active[("WP-A2", "low_pressure")]
        await st.client.post(f"/alarms/{second.id}/acknowledge", json={"note": "known"})
    async with stack_for(settings, servers) as again:
        active = (await again.client.get("/alarms", params={"rule": "low_pressure"})).json()[
            "items"
        ]
        assert [(a["device_id"], a["acknowledged_by"], a["note"]) for a in active] == [
            ("WP-A2", "anonymous", "known")
        ]
        past = (
            await again.client.get("/alarms", params={"state": "cleared", "rule": "low_pressure"})
        ).json()["items"]
        assert [a["id"] for a in past] == [alarm["id"]]


async def test_a_silent_device_raises_an_alarm_and_its_next_reading_clears_it(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
    settings = live_settings(
        servers, influx, tmp_path, topic_root, profiles=fast_profiles(tmp_path, "1s")
    )
    async with stack_for(settings, servers) as st:
        await st.feed(("streetlight", "SL-A1", "North", time.time_ns(), {"powerState": "on"}))

        async def silent() -> list[dict[str, object]]:
            body = (
                await st.client.get("/alarms", params={"rule": "silent", "device_id": "SL-A1"})
            ).json()
            return list(body["items"])

        [alarm] = await until(silent, 10, "the silent alarm")
        assert alarm["state"] == "active"
        await st.feed(("streetlight", "SL-A1", "North", time.time_ns(), {"powerState": "on"}))
        await until(
            lambda: not st.app.state.runtime.live.alarms.active.get(("SL-A1", "silent")), 5, "clear"
        )
        body = (
            await st.client.get("/alarms", params={"rule": "silent", "state": "cleared"})
        ).json()
        assert [a["id"] for a in body["items"]] == [alarm["id"]]


def silent_city(influx: InfluxConfig, tmp_path: Path) -> tuple[Path, int]:
    """A 3,000-device city whose streetlights' last readings are 30 minutes old: its registry,
    and how many streetlights (silent when an API starts over it)."""
    registry = tmp_path / "city.csv"
    with registry.open("w") as out:
        write_city(out, 3000)
    profiles = load_profiles()
    lamps = [
        d for d in load_registry(registry, profiles).devices.values() if d.profile == "streetlight"
    ]
    ago = time.time_ns() - 30 * MIN
    points = [
        Point("streetlight", d.device_id, d.district, {"powerState": "on"}, ago) for d in lamps
    ]
    with InfluxClient(influx) as client:
        client.write(line_protocol(points))
    return registry, len(lamps)


def silent_alarms(book: AlarmBook) -> int:
    return sum(rule == "silent" for _, rule in book.active)


async def test_a_storm_of_devices_silent_at_start_is_stored_whole_not_dropped(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
    """Every streetlight of a 3,000-device city silent when the API starts (ingest away while
    it was down): 1,800 `silent` alarms whose events are ten times the outbox (64 KB here). With
    InfluxDB well, every event is stored and none dropped: they wait for the outbox's room."""
    registry, lamps = silent_city(influx, tmp_path)
    settings = live_settings(
        servers, influx, tmp_path, topic_root, registry=registry, api_alarm_outbox_bytes=64 * 1024
    )
    async with stack_for(settings, servers) as st:
        book = st.app.state.runtime.live.alarms
        where = "WHERE \"rule\" = 'silent' AND \"event\" = 'raised'"

        async def stored() -> bool:
            return await asyncio.to_thread(count, influx, "alarm_events", where) == lamps

        await until(stored, 60, "every event stored", interval=0.5)
        assert book.outbox.dropped == 0
        assert silent_alarms(book) == lamps


class AlarmEventsRefused(httpx.AsyncBaseTransport):
    """The real InfluxDB, except that it answers every write of alarm events with `status`
    (503: away; 400: a field-type conflict, refused for good) while that is not None."""

    def __init__(self, status: int | None = 503) -> None:
        self._real = httpx.AsyncHTTPTransport()
        self.status = status

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if (
            self.status is not None
            and request.url.path == "/write"
            and b"alarm_events" in request.content
        ):
            error = "partial write: field type conflict" if self.status == 400 else "away"
            return httpx.Response(self.status, json={"error": f"{error} (the test's)"})
        return await self._real.handle_async_request(request)


async def test_a_storm_while_influxdb_refuses_alarm_events_is_raised_at_once_oldest_dropped(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
    """The same storm with InfluxDB refusing the events: waiting for room would hold every
    alarm (and live clients' reporting events) back for the whole outage, so all are raised at
    once and the outbox keeps its bound by dropping the oldest events, counted."""
    registry, lamps = silent_city(influx, tmp_path)
    settings = live_settings(
        servers, influx, tmp_path, topic_root, registry=registry, api_alarm_outbox_bytes=64 * 1024
    )
    async with stack_for(settings, servers, influx_transport=AlarmEventsRefused()) as st:
        book = st.app.state.runtime.live.alarms
        await until(lambda: silent_alarms(book) == lamps, 30, "every silent alarm raised")
        assert not st.app.state.runtime.live.writer.storing
        assert book.outbox.dropped > 0
        assert book.outbox.bytes <= 64 * 1024


async def test_an_acknowledgement_is_answered_200_only_once_its_event_is_stored(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
    """A 200 means stored: a crash right after loses nothing. InfluxDB away: 503, the event
    queued and stored once it is back; InfluxDB refusing the event: 502. The alarm takes an
    acknowledgement, and live clients hear of it, only once it is stored; one stored while its
    alarm cleared is still the alarm's after a restart."""
    t0 = time.time_ns() - 30 * MIN
    settings = live_settings(servers, influx, tmp_path, topic_root, api_alarm_ack_wait=1.0)
    influx_events = AlarmEventsRefused(status=None)
    async with stack_for(settings, servers, influx_transport=influx_events) as st:
        await st.feed(
            ("water_pipe", "WP-A1", "North", t0, {"pressure": 50.0}),
            ("water_pipe", "WP-A1", "North", t0 + 10 * MIN, {"pressure": 40.0}),
        )
        book = st.app.state.runtime.live.alarms
        await until(lambda: ("WP-A1", "low_pressure") in book.active, 5, "the alarm")
        alarm_id = book.active[("WP-A1", "low_pressure")].id
        url = f"/alarms/{alarm_id}/acknowledge"

        def notes() -> list[str]:
            query = (
                "SELECT note FROM alarms.alarm_events WHERE event = 'acknowledged' "
                f"AND alarm_id = '{alarm_id}'"
            )
            return [str(r["note"]) for r in rows(influx, query)]

        def heard() -> list[str]:
            return [
                e.data["alarm"]["note"]
                for e in st.events
                if e.kind == "alarm" and e.data["event"] == "acknowledged"
            ]

        influx_events.status = 503
        away = await st.client.post(url, json={"note": "while away"})
        assert away.status_code == 503 and away.headers["Retry-After"] == "5"
        assert "not stored yet" in away.json()["detail"]
        assert notes() == [] and heard() == []
        influx_events.status = None
        ok = await st.client.post(url, json={"note": "back"})
        assert ok.status_code == 200 and ok.json()["note"] == "back"
        assert notes() == ["while away", "back"]  # at the 200 already, not some time after
        assert heard() == ["while away", "back"]
        influx_events.status = 400
        refused = await st.client.post(url, json={"note": "refused"})
        assert refused.status_code == 502 and "refused" in refused.json()["detail"]
        assert notes() == ["while away", "back"] and heard() == ["while away", "back"]
        assert (await st.client.get(f"/alarms/{alarm_id}")).json()["note"] == "back"
        # Another alarm, acknowledged while InfluxDB is away, clears meanwhile.
        await st.feed(
            ("water_pipe", "WP-A2", "North", t0, {"pressure": 50.0}),
            ("water_pipe", "WP-A2", "North", t0 + 10 * MIN, {"pressure": 40.0}),
        )
        await until(lambda: ("WP-A2", "low_pressure") in book.active, 5, "the second alarm")
        second = book.active[("WP-A2", "low_pressure")]
        influx_events.status = 503
        url = f"/alarms/{second.id}/acknowledge"
        assert (await st.client.post(url, json={"note": "gone"})).status_code == 503
        await st.feed(("water_pipe", "WP-A2", "North", t0 + 11 * MIN, {"pressure": 125.0}))
        await until(lambda: second.end_ns is not None, 5, "the clear")
        shown = (await st.client.get(f"/alarms/{second.id}")).json()
        assert (shown["state"], shown["acknowledged_by"]) == ("cleared", None)  # not stored
        assert heard() == ["while away", "back"]  # nor heard: the clear did not carry it
        influx_events.status = None
        await until(lambda: "gone" in heard(), 5, "the acknowledgement stored, then heard")
        # Asked again (its answer lost): cleared since, but this one stored, so done, and no
        # second event; another note is refused, saying who acknowledged it.
        again = await st.client.post(url, json={"note": "gone"})
        assert again.status_code == 200 and again.json()["acknowledged_by"] == "anonymous"
        assert not book.outbox and heard() == ["while away", "back", "gone"]
        other = await st.client.post(url, json={"note": "another"})
        assert other.status_code == 409
        assert "acknowledged by 'anonymous'" in other.json()["detail"]
        assert book.outbox.watching == 0  # every watch let go
    async with stack_for(settings, servers) as restarted:
        replayed = (await restarted.client.get(f"/alarms/{second.id}")).json()
        assert (replayed["state"], replayed["acknowledged_by"], replayed["note"]) == (
            "cleared",
            "anonymous",
            "gone",
        )


class AlarmEventsUnread(httpx.AsyncBaseTransport):
    """The real InfluxDB, except that it answers queries of alarm events 503 while `away`."""

    def __init__(self) -> None:
        self._real = httpx.AsyncHTTPTransport()
        self.away = True
        self.refused = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        asked = request.url.query + request.content
        if self.away and request.url.path == "/query" and b"alarm_events" in asked:
            self.refused += 1
            return httpx.Response(503, json={"error": "away (the test's)"})
        return await self._real.handle_async_request(request)


async def test_alarms_are_judged_once_replayed_and_then_against_the_state_as_it_is(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
    """Two pipes' alarms active when the API stops; one pipe's pressure comes back while no API
    runs. The next start cannot read the stored alarms at first: /alarms answers 503 and nothing
    is judged (judged, the active alarm would be raised again under a new id). Once read back,
    the alarms are judged against the state: the pipe back in range is cleared, though no new
    reading will cross a threshold to clear it."""
    t0 = time.time_ns() - 30 * MIN
    settings = live_settings(servers, influx, tmp_path, topic_root)
    async with stack_for(settings, servers) as st:
        fed = [(d, t) for d in ("WP-A1", "WP-A2") for t in (t0, t0 + 10 * MIN)]
        await st.feed(*[("water_pipe", d, "North", t, {"pressure": 40.0}) for d, t in fed])
        book = st.app.state.runtime.live.alarms
        low = [(d, "low_pressure") for d in ("WP-A1", "WP-A2")]
        await until(lambda: all(k in book.active for k in low), 5, "both alarms")
        first = {d: book.active[(d, rule)].id for d, rule in low}
        await until(lambda: not book.outbox, 5, "their events stored")
    back = t0 + 15 * MIN
    with InfluxClient(influx) as client:  # what ingest stored while no API ran
        client.write(
            line_protocol(
                [
                    Point("water_pipe", "WP-A1", "North", {"pressure": 125.0}, back),
                    Point("water_pipe", "WP-A2", "North", {"pressure": 40.0}, back),
                ]
            )
        )
    unread = AlarmEventsUnread()
    later = settings.model_copy(update={"api_state_from_rows": False})  # these have no rows
    async with stack_for(later, servers, influx_transport=unread) as again:
        book = again.app.state.runtime.live.alarms
        await until(lambda: again.app.state.runtime.live.state.loaded, 10, "the state")
        refused = await again.client.get("/alarms")
        assert refused.status_code == 503 and "not read back yet" in refused.json()["detail"]
        assert not book.active and not book.outbox  # nothing judged, nothing raised
        unread.away = False
        await until(lambda: book.replayed, 10, "the alarms read back, tried again")
        asked = {"rule": "low_pressure"}
        active = (await again.client.get("/alarms", params=asked)).json()["items"]
        assert [(a["device_id"], a["id"]) for a in active] == [("WP-A2", first["WP-A2"])]
        asked["state"] = "cleared"
        cleared = (await again.client.get("/alarms", params=asked)).json()
        [gone] = cleared["items"]
        assert (gone["id"], gone["end"], gone["value"]) == (first["WP-A1"], rfc3339(back), 125.0)
    assert unread.refused >= 1  # at start: read back by a later try


async def test_a_breach_stored_while_no_api_ran_is_raised_at_the_next_start(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
    """A leak reported while every API was down (a redeploy): the next start judges each
    device's newest reading, so the leak is raised now, at the reading's time, not at a later
    reading that may not come for hours; a breach with a duration starts its wait there."""
    at = time.time_ns() - 15 * MIN
    with InfluxClient(influx) as client:  # what ingest stored while no API ran
        client.write(
            line_protocol(
                [
                    Point("water_pipe", "WP-A1", "North", {"pressure": 300.0}, at - MIN),
                    Point("water_pipe", "WP-A1", "North", {"leakDetected": True}, at),
                    Point("water_pipe", "WP-A2", "North", {"pressure": 40.0}, at),
                ]
            )
        )
    settings = live_settings(servers, influx, tmp_path, topic_root)
    later = settings.model_copy(update={"api_state_from_rows": False})  # these have no rows
    async with stack_for(later, servers) as st:
        book = st.app.state.runtime.live.alarms
        await until(lambda: ("WP-A1", "leak_flag") in book.active, 10, "the leak raised")
        leak = book.active[("WP-A1", "leak_flag")]
        assert leak.start_ns == at and leak.value is True
        assert ("WP-A2", "low_pressure") not in book.active  # 10 minutes below: not yet
        assert book.pending[("WP-A2", "low_pressure")] == at
        # Later readings of the pipe still below: raised once its ten minutes are up.
        await st.feed(("water_pipe", "WP-A2", "North", at + 10 * MIN, {"pressure": 45.0}))
        await until(lambda: ("WP-A2", "low_pressure") in book.active, 5, "low pressure")
        assert book.active[("WP-A2", "low_pressure")].start_ns == at


# --- who may see and acknowledge which alarm (access rights on) ---------------------------------

# name: (scope, profiles, districts, may acknowledge)
ALARM_TOKENS: dict[str, tuple[str, list[str] | None, list[str] | None, bool]] = {
    "city": ("city", None, None, False),
    "water-north": ("department", ["water_pipe"], ["North"], True),
    "water-north-read": ("department", ["water_pipe"], ["North"], False),
    "water-kx": ("department", ["water_pipe"], ["King's Cross"], True),
    "lights": ("department", ["streetlight"], None, True),
    "portal": ("open_data", None, None, False),
}


def alarm_token(name: str) -> str:
    return f"{name}-alarm-token"


def write_alarm_tokens(path: Path) -> Path:
    entries = []
    for name, (scope, profiles, districts, ack) in ALARM_TOKENS.items():
        entry: dict[str, object] = {
            "name": name,
            "sha256": hash_token(alarm_token(name)),
            "scope": scope,
        }
        if profiles is not None:
            entry["profiles"] = profiles
        if districts is not None:
            entry["districts"] = districts
        if ack:
            entry["acknowledge"] = True
        entries.append(entry)
    path.write_text(yaml.safe_dump({"tokens": entries}))
    return path


def as_(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {alarm_token(name)}"}


async def test_alarm_rights_follow_the_scope_of_each_token(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
    """city reads every alarm and acknowledges none; a department reads its own devices' alarms
    and acknowledges them only with `acknowledge: true`, never another department's or another
    district's; open data reaches no alarm route at all. Only the allowed acknowledgement is
    pushed and stored."""
    settings = live_settings(
        servers, influx, tmp_path, topic_root, tokens=write_alarm_tokens(tmp_path / "tokens.yaml")
    )
    async with stack_for(settings, servers) as st:
        t = time.time_ns() - MIN
        await st.feed(
            ("water_pipe", "WP-A1", "North", t, {"pressure": 300.0, "leakDetected": True}),
            ("water_pipe", "WP-K1", "King's Cross", t, {"pressure": 300.0, "leakDetected": True}),
            ("streetlight", "SL-A1", "North", t, {"powerState": "on", "tiltAngle": 12.0}),
        )
        book = st.app.state.runtime.live.alarms
        raised = [("WP-A1", "leak_flag"), ("WP-K1", "leak_flag"), ("SL-A1", "pole_tilted")]
        await until(lambda: all(key in book.active for key in raised), 5, "three alarms")
        north, kx, lamp = (book.active[key].id for key in raised)

        async def listed(name: str) -> list[str]:
            response = await st.client.get("/alarms", params={"state": "all"}, headers=as_(name))
            assert response.status_code == 200, (name, response.text)
            body = response.json()
            assert body["total"] == len(body["items"])
            return sorted(a["id"] for a in body["items"])

        assert await listed("city") == sorted([north, kx, lamp])
        assert await listed("water-north") == [north]
        assert await listed("water-north-read") == [north]
        assert await listed("water-kx") == [kx]
        assert await listed("lights") == [lamp]
        for name, params in [
            ("water-north", {"profile": "streetlight"}),
            ("water-north", {"district": "King's Cross"}),
            ("lights", {"profile": "water_pipe"}),
        ]:
            response = await st.client.get("/alarms", params=params, headers=as_(name))
            assert response.status_code == 403, (name, params)

        # one alarm by id: only within the scope
        for name, visible in [
            ("city", {north, kx, lamp}),
            ("water-north", {north}),
            ("water-kx", {kx}),
            ("lights", {lamp}),
        ]:
            for alarm in (north, kx, lamp):
                response = await st.client.get(f"/alarms/{alarm}", headers=as_(name))
                # Outside the scope is answered as no such alarm: ids do not leak.
                assert response.status_code == (200 if alarm in visible else 404), (name, alarm)

        # open data: no alarm route at all; no token: 401
        for method, path in [
            ("GET", "/alarms"),
            ("GET", f"/alarms/{north}"),
            ("POST", f"/alarms/{north}/acknowledge"),
        ]:
            response = await st.client.request(method, path, headers=as_("portal"))
            assert response.status_code == 403, (method, path)
            assert (await st.client.request(method, path)).status_code == 401, (method, path)

        # acknowledging WP-A1's alarm: refused to everyone but its own department with the right
        async def acknowledge(name: str, alarm: str) -> httpx.Response:
            return await st.client.post(
                f"/alarms/{alarm}/acknowledge", json={"note": f"by {name}"}, headers=as_(name)
            )

        for name in ("city", "water-north-read"):  # they see it, may not acknowledge it
            response = await acknowledge(name, north)
            assert response.status_code == 403, (name, response.text)
            assert name in response.json()["detail"]
        for name in ("water-kx", "lights"):  # outside their scope: no such alarm, for them
            response = await acknowledge(name, north)
            assert response.status_code == 404, (name, response.text)
        assert book.by_id[north].acknowledged_by is None
        response = await acknowledge("water-north", north)
        assert response.status_code == 200, response.text
        assert response.json()["acknowledged_by"] == "water-north"
        assert response.json()["note"] == "by water-north"
        seen = await st.client.get(f"/alarms/{north}", headers=as_("city"))
        assert seen.json()["acknowledged_by"] == "water-north"
        # a department with the right acknowledges its own alarm, not only water-north
        assert (await acknowledge("lights", lamp)).status_code == 200
        assert (await acknowledge("lights", kx)).status_code == 404
        assert book.by_id[kx].acknowledged_by is None

        acknowledged = [
            (e.data["alarm"]["id"], e.data["alarm"]["acknowledged_by"])
            for e in st.events
            if e.kind == "alarm" and e.data["event"] == "acknowledged"
        ]
        assert acknowledged == [(north, "water-north"), (lamp, "lights")]

        def stored() -> list[dict[str, object]]:
            return rows(
                influx,
                "SELECT alarm_id, acknowledged_by, note FROM alarms.alarm_events "
                "WHERE \"event\" = 'acknowledged'",
            )

        await until(lambda: len(stored()) >= 2, 10, "the acknowledgements stored", 0.2)
        assert sorted((r["alarm_id"], r["acknowledged_by"], r["note"]) for r in stored()) == sorted(
            [(north, "water-north", "by water-north"), (lamp, "lights", "by lights")]
        )


async def test_an_event_influxdb_refuses_is_dropped_and_counted_and_the_others_are_stored(
    influx: InfluxConfig,
) -> None:
    # `value` first stored as an integer: an event with it as text is a field-type conflict,
    # which InfluxDB refuses for good. Retried whole, the outbox never emptied.
    t0 = time.time_ns() - MIN
    with InfluxClient(influx) as client:
        client.write(f"alarm_events,alarm_id=old value=1i {t0}".encode(), policy="alarms")
    profiles = load_profiles()
    contract = Contract.build(profiles, load_registry(DEFAULT_REGISTRY, profiles))
    book = AlarmBook(contract, Hub(10))
    lines = [f'alarm_events,alarm_id=a{n} value={n}i,note="ok" {t0 + 1 + n}' for n in range(7)]
    lines[4] = f'alarm_events,alarm_id=a4 value="text" {t0 + 5}'
    for text in lines:
        book.outbox.append(text)
    writer = Writer(influx, book, lambda text: text)
    try:
        await writer.flush()
        assert writer.storing
        assert writer.refused == 1
        assert not book.outbox
        stored = rows(influx, f"SELECT alarm_id, value FROM alarms.alarm_events WHERE time > {t0}")
        assert sorted(str(r["alarm_id"]) for r in stored) == [f"a{n}" for n in range(7) if n != 4]
    finally:
        await writer.aclose()
