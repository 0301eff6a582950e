"""The hourly roll-ups into `long_term` are one continuous query per profile and piece of its
devices (common.schema.rollup_pieces): together they roll up every device exactly once, ids of
any characters a device id may hold; an older single query per profile is dropped. They run once
a day over the two days before (common.schema.DAILY), or each hour where readings are kept under
two days, and a query of the other schedule is replaced. A pass InfluxDB missed while down is
made up at its start."""

from __future__ import annotations

import dataclasses
import re
import threading

import pytest

from citysense.servers import LocalServers
from common.influx import InfluxClient, InfluxConfig
from common.schema import (
    DAILY,
    HOURLY,
    ID_CHARS,
    Retention,
    ensure_schema,
    rollup_pieces,
    rollup_select,
)
from device_profiles.model import DEVICE_ID
from tests.support.polling import wait_for
from tests.support.seeding import Point, line_protocol
from tests.support.times import S

pytestmark = pytest.mark.integration

HOUR = 3600 * S
IDS = ["7", "Z", "_x", "A-", "WP.1:", "WP-000010", "WP-000019", "WP-000099", "WP-00009a", "b_z"]


def test_the_charset_is_the_device_ids() -> None:
    assert all(DEVICE_ID.fullmatch(f"A{c}") for c in ID_CHARS)
    assert sorted(set(ID_CHARS)) == sorted(
        c for c in map(chr, range(128)) if DEVICE_ID.fullmatch(f"A{c}")
    )


def test_every_device_rolled_up_once_by_the_pieces(influx: InfluxConfig, now: int) -> None:
    hour = now - now % HOUR - HOUR
    points = [
        Point("water_pipe", device, "North", {"pressure": float(n + k)}, hour + k * 60 * S)
        for n, device in enumerate(IDS)
        for k in range(3)
    ]
    pieces = rollup_pieces()
    with InfluxClient(influx) as client:
        client.write(line_protocol(points))
        for _, ids in pieces:
            where = f"{ids} AND time >= {hour:d} AND time < {hour + HOUR:d}"
            select = rollup_select(influx.database, "water_pipe", where)
            client.query(f"{select} GROUP BY time(1h), *")
        rolled = client.query('SELECT * FROM "long_term"."water_pipe" GROUP BY "device_id"')[0]
    assert sorted(s.tags["device_id"] for s in rolled) == sorted(IDS)  # once each
    assert {r["count_pressure"] for s in rolled for r in s.rows()} == {3}
    for device_id in IDS:  # the same as Go's RE2 reads them: exactly one piece each
        matching = [
            name
            for name, ids in pieces
            if (re.search(ids.split("/")[1], device_id) is not None) == ("=~" in ids)
        ]
        assert len(matching) == 1, (device_id, matching)
    assert [name for name, ids in pieces if "!~" in ids] == ["rest"]


def test_an_older_single_query_per_profile_is_dropped(influx: InfluxConfig) -> None:
    db = f'"{influx.database}"'
    with InfluxClient(influx) as client:
        client.create_database()
        client.query(
            f'CREATE CONTINUOUS QUERY "rollup_water_pipe" ON {db} BEGIN '
            f'SELECT mean(*) INTO "water_pipe_old" FROM "water_pipe" GROUP BY time(1h), * END'
        )
        ensure_schema(client, Retention(), ["water_pipe", "water"])
        ensure_schema(client, Retention(), ["water_pipe", "water"])  # idempotent
        shown = client.query("SHOW CONTINUOUS QUERIES")[0]
    names = {str(r["name"]) for s in shown if s.name == influx.database for r in s.rows()}
    assert "rollup_water_pipe" not in names
    for profile in ("water_pipe", "water"):
        ours = re.compile(rf"^rollup_{profile}_(\d+|rest)$")
        assert len([n for n in names if ours.match(n)]) == len(rollup_pieces())


def _unset(influx: InfluxConfig) -> InfluxConfig:
    """A database of its own, not set up yet (its readings may be written before its roll-ups
    run: InfluxDB remembers a query's last run by database and name, dropped or not)."""
    return dataclasses.replace(influx, database=f"{influx.database}_unset")


def _ours(client: InfluxClient, database: str, profile: str) -> dict[str, str]:
    """The roll-up queries of `profile`: name → definition, as InfluxDB shows it."""
    ours = re.compile(rf"^rollup_{profile}_(\d+|rest)$")
    shown = client.query("SHOW CONTINUOUS QUERIES")[0]
    return {
        str(r["name"]): str(r["query"])
        for s in shown
        if s.name == database
        for r in s.rows()
        if ours.match(str(r["name"]))
    }


def test_a_new_roll_up_rolls_up_the_two_days_before_at_once(influx: InfluxConfig, now: int) -> None:
    # InfluxDB runs a query when it is created (and when it starts) over its span before now:
    # two days', so a reading 40 hours old is rolled up; an hourly query's would not be.
    hour = now - now % HOUR
    points = [
        Point("water_pipe", "WP-7", "North", {"pressure": 2.0}, hour - 40 * HOUR + 60 * S),
        Point("water_pipe", "WP-7", "North", {"pressure": 4.0}, hour - HOUR + 60 * S),
    ]
    fresh = _unset(influx)
    with InfluxClient(fresh) as client:
        client.create_database()
        db = f'"{fresh.database}"'
        client.query(f'CREATE RETENTION POLICY "readings" ON {db} DURATION 400d REPLICATION 1')
        client.write(line_protocol(points), policy="readings")
        ensure_schema(client, Retention(), ["water_pipe"])
        queries = _ours(client, fresh.database, "water_pipe")
        assert len(queries) == len(rollup_pieces())
        assert all(DAILY.clause in text for text in queries.values()), queries

        got = wait_for(lambda: _rolled(client, 2), timeout=30, what="both hours rolled up")
    assert sorted((r["time"], r["mean_pressure"]) for r in got) == [
        (hour - 40 * HOUR, 2.0),
        (hour - HOUR, 4.0),
    ]


def _rolled(client: InfluxClient, count: int) -> list[dict[str, object]]:
    """The rows of `long_term`.water_pipe once there are `count` of them, else none."""
    found = client.query('SELECT * FROM "long_term"."water_pipe"', epoch="ns")[0]
    got = [r for s in found for r in s.rows()]
    return got if len(got) == count else []


def test_a_pass_missed_while_influxdb_was_down_is_made_up_when_it_starts(
    private_servers: LocalServers, now: int
) -> None:
    # InfluxDB down over a midnight, or killed in the middle of a pass: it keeps no query's last
    # run across a restart, and its start runs each over the two days before, so the hours the
    # missed pass would have rolled up are rolled up then (wholly again, over what a killed pass
    # wrote: a roll-up's point is overwritten, not added to).
    hour = now - now % HOUR
    config = InfluxConfig(url=private_servers.influxdb.url, database="t_restarted")
    with InfluxClient(config) as client:
        client.create_database()
        db = f'"{config.database}"'
        client.query(f'CREATE RETENTION POLICY "readings" ON {db} DURATION 400d REPLICATION 1')
        old = Point("water_pipe", "WP-7", "North", {"pressure": 2.0}, hour - 40 * HOUR + 60 * S)
        client.write(line_protocol([old]), policy="readings")
        ensure_schema(client, Retention(), ["water_pipe"])
        wait_for(lambda: _rolled(client, 1), timeout=30, what="the first pass, at creation")
        # Stored after that pass: the next one is at midnight, or at InfluxDB's next start.
        new = Point("water_pipe", "WP-7", "North", {"pressure": 4.0}, hour - HOUR + 60 * S)
        client.write(line_protocol([new]), policy="readings")
    private_servers.influxdb.kill()
    private_servers.influxdb.start()
    with InfluxClient(config) as client:
        got = wait_for(lambda: _rolled(client, 2), timeout=60, what="the pass at InfluxDB's start")
    assert sorted((r["time"], r["mean_pressure"]) for r in got) == [
        (hour - 40 * HOUR, 2.0),
        (hour - HOUR, 4.0),
    ]


def test_the_schedule_follows_the_readings_retention(influx: InfluxConfig) -> None:
    fresh = _unset(influx)  # the fixture's readings are kept for ever: shard groups of a week
    with InfluxClient(fresh) as client:
        ensure_schema(client, Retention(readings="1d"), ["water_pipe"])
        hourly = _ours(client, fresh.database, "water_pipe")
        assert all(HOURLY.clause in text for text in hourly.values()), hourly
        report = ensure_schema(client, Retention(readings="2d"), ["water_pipe"])
        daily = _ours(client, fresh.database, "water_pipe")
        again = ensure_schema(client, Retention(readings="2d"), ["water_pipe"])
    assert sorted(daily) == sorted(hourly) and len(daily) == len(rollup_pieces())
    assert all(DAILY.clause in text for text in daily.values()), daily
    assert sorted(n for n in report.created if n.startswith("rollup_")) == sorted(daily)
    assert again.created == ()


def test_set_ups_replacing_the_schedule_at_once_leave_every_piece_on_it(
    influx: InfluxConfig,
) -> None:
    # An upgrade restarts every ingest worker at once, and each (where it is InfluxDB's admin)
    # replaces the roll-ups' schedule: each drops what its own look found on the other
    # schedule, then creates; InfluxDB 1.6 drops a missing query and creates an identical one
    # without an error, and every process's creates follow its drops, so the last word on each
    # query is a creation. Several rounds, for several interleavings.
    profiles = ["water_pipe", "streetlight"]
    for round_ in range(3):
        fresh = dataclasses.replace(influx, database=f"{influx.database}_race{round_}")
        with InfluxClient(fresh) as client:
            ensure_schema(client, Retention(readings="1d"), profiles)  # hourly, as before
        failed: list[BaseException] = []

        def set_up(config: InfluxConfig = fresh, failed: list[BaseException] = failed) -> None:
            try:
                with InfluxClient(config) as client:
                    ensure_schema(client, Retention(), profiles)  # daily
            except BaseException as exc:  # reported below, in the test's thread
                failed.append(exc)

        workers = [threading.Thread(target=set_up) for _ in range(3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert not failed, failed
        with InfluxClient(fresh) as client:
            for profile in profiles:
                queries = _ours(client, fresh.database, profile)
                assert len(queries) == len(rollup_pieces()), (round_, profile)
                assert all(DAILY.clause in text for text in queries.values()), queries
