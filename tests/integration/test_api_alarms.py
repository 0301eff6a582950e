"""Alarms from the shipped profile rules, evaluated on the state feed against the real servers:
duration, update, hysteresis, clear, acknowledge, silent devices, and survival of a restart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from citysense.servers import LocalServers
from common.influx import InfluxConfig
from tests.support.polling import until
from tests.support.state import fast_profiles, live_settings, stack_for
from tests.support.times import MIN, rfc3339

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_low_pressure_raises_after_its_duration_updates_and_clears_with_hysteresis(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path, topic_root: str
) -> None:
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
