"""The latest rows' pure logic (wire.latest, ingest.latest, api.live.rows): which readings become
rows, what a row holds, which devices share a slot, how a row is read back."""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from api.core.contract import Contract
from api.core.readings import Reading
from api.live import compact
from api.live import rows as api_rows
from api.live.hub import Hub
from api.live.state import NO_TIME, LiveState
from common.influx import InfluxClient, InfluxConfig, Series
from device_profiles import Device, Registry, load_profiles, load_registry
from ingest import latest as latest_module
from ingest.latest import RECENT_WRITES, LatestRows
from ingest.replay import Replayer
from ingest.settings import IngestSettings
from ingest.stages import Enriched
from ingest.worker import Worker
from ingest.write import BadLine, Writer
from wire import latest as layout
from wire.lineproto import FieldValue, parse_line

PROFILES = load_profiles()
REGISTRY = {
    d.device_id: d
    for d in (
        Device(device_id=i, profile=p, district="North", latitude=30.0, longitude=120.0)
        for i, p in (("SL-1", "streetlight"), ("SL-2", "streetlight"), ("WP-1", "water_pipe"))
    )
}
POWER = layout.key_of("streetlight", "powerConsumption", "number")
STATE = layout.key_of("streetlight", "powerState", "state")
TEMPERATURE = layout.key_of("streetlight", "temperature", "number")
DIGEST = layout.fields_digest(PROFILES["streetlight"].field_types())


def lamp(device: str, time_ns: int, power: float) -> Enriched:
    return Enriched("streetlight", device, "North", time_ns, {"powerConsumption": power})


def keeper() -> LatestRows:
    """A keeper whose writer held no rows yet (read back from InfluxDB as at a start)."""
    return _resumed_from(_none)


def _resumed_from(answer: Callable[[httpx.Request], httpx.Response]) -> LatestRows:
    """A keeper of writer `worker-1` that read its rows back from what `answer` answers."""
    rows = LatestRows("worker-1", PROFILES, lambda: REGISTRY)
    with _influx(answer) as client:
        rows.resume(client)
    assert rows.resumed
    return rows


def test_a_batch_gives_one_row_per_registered_device_its_newest_reading() -> None:
    rows = keeper().rows(
        [
            lamp("SL-1", 20, 2.0),
            lamp("SL-1", 30, 3.0),
            lamp("SL-1", 10, 1.0),  # late, within the batch
            lamp("SL-2", 5, 5.0),
            lamp("SL-9", 50, 9.0),  # not registered: the API keeps no state of it
            Enriched(
                "streetlight", "WP-1", "South", 60, {"powerConsumption": 1.0}
            ),  # other profile
        ]
    )
    points = {p.fields["device"]: p for p in map(parse_line, rows.lines)}
    assert sorted(points) == ["SL-1", "SL-2"]
    assert points["SL-1"].fields == {"device": "SL-1", "at": 30, "has": f"{DIGEST}:4", POWER: 3.0}
    bucket, slot = layout.slot_of("SL-1")
    assert points["SL-1"].measurement == layout.MEASUREMENT
    assert points["SL-1"].tags == {"profile": "streetlight", "writer": "worker-1", "bucket": bucket}
    assert points["SL-1"].time_ns == slot
    assert rows.newest == {"SL-1": 30, "SL-2": 5}


def test_a_row_moves_only_forward_and_only_once_stored() -> None:
    rows = keeper()
    first = rows.rows([lamp("SL-1", 30, 3.0)])
    # Not stored yet (the write failed, the batch went to the spool): not remembered.
    assert len(rows.rows([lamp("SL-1", 20, 2.0)]).lines) == 1
    rows.stored(first)
    assert rows.rows([lamp("SL-1", 20, 2.0)]).lines == []  # older than the row
    # The same time again: one point in InfluxDB, whose row is written again (test below).
    assert rows.rows([lamp("SL-1", 30, 3.0)]).lines == first.lines
    newer = rows.rows([lamp("SL-1", 31, 3.1)])
    assert len(newer.lines) == 1
    rows.stored(newer)
    # The row at 30 is still remembered, but is no longer the row: a late 30 never moves it.
    assert rows.rows([lamp("SL-1", 30, 3.0)]).lines == []


def _influx(answer: Callable[[httpx.Request], httpx.Response]) -> InfluxClient:
    """A client whose answers `answer` gives: what the keeper decides from them is tested here,
    the server's own answers in tests/integration/test_latest_rows.py."""
    config = InfluxConfig(url="http://influx.invalid", database="city")
    return InfluxClient(config, transport=httpx.MockTransport(answer))


def _none(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"results": [{"statement_id": 0}]})


def _found(request: httpx.Request) -> httpx.Response:
    row = {"name": layout.MEASUREMENT, "columns": ["time", "device", "at"]}
    row["values"] = [[0, "SL-1", 30]]
    return httpx.Response(200, json={"results": [{"statement_id": 0, "series": [row]}]})


def _no_policy(request: httpx.Request) -> httpx.Response:
    error = "retention policy not found: latest"
    return httpx.Response(200, json={"results": [{"statement_id": 0, "error": error}]})


def test_without_the_policy_no_rows_are_kept_until_it_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = keeper()
    with _influx(_no_policy) as client:
        rows.resume(client)
    assert not rows.enabled
    off = rows.rows([lamp("SL-1", 30, 3.0)])
    assert off.lines == [] and off.owed
    (owed,) = rows.owed(off.owed)  # the mark that readings went without rows
    point = parse_line(owed + " 0")  # no time of its own: InfluxDB stamps it as it stores it
    assert point.measurement == layout.OWED and point.fields["writer"] == "worker-1"
    assert owed != rows.owed(off.owed)[0]  # each mark its own stamp
    assert not rows.rows([]).owed  # no readings, nothing owed
    with _influx(_found) as client:
        rows.recheck(client)  # not due yet: no query, still off
        assert not rows.enabled
        rows._recheck_at = 0.0  # as RECHECK_S later
        rows.recheck(client)
    assert rows.enabled
    assert rows.rows([lamp("SL-1", 30, 3.0)]).lines == []  # what it holds was read back
    assert len(rows.rows([lamp("SL-1", 31, 3.1)]).lines) == 1
    assert caplog.text.count("no latest rows kept by worker-1") == 1


def test_rows_refused_for_a_missing_policy_turn_rows_off_and_hold_nothing_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = keeper()
    pending = rows.rows([lamp("SL-1", 30, 3.0), lamp("SL-2", 30, 3.0)])
    why = "InfluxDB 500: retention policy not found: latest"
    bad = [BadLine(line, why, missing=True) for line in pending.lines]
    assert rows.settle(pending, bad) == ([], 2)  # no dead letters: the readings are stored
    assert not pending.owed  # the keeper was on when the rows were made ...
    assert len(rows.owed(True)) == 1  # ... and the refusal owes them
    assert not rows.enabled
    assert "InfluxDB refused a latest row" not in caplog.text  # said once, below
    assert caplog.text.count("no latest rows kept by worker-1") == 1
    rows.enabled = True  # as a recheck that found the policy: nothing was remembered
    assert len(rows.rows([lamp("SL-1", 30, 3.0)]).lines) == 1


def test_a_failed_read_back_keeps_no_rows_until_a_later_one_succeeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Rows under a tag of that run alone would add a writer's rows to every later start's read
    # at each such start, for ever: none until the writer's own are read back, owed meanwhile.
    rows = LatestRows("worker-1", PROFILES, lambda: REGISTRY)
    clock = [1000.0]
    monkeypatch.setattr(latest_module.time, "monotonic", lambda: clock[0])
    asked: list[str] = []

    def busy(request: httpx.Request) -> httpx.Response:
        asked.append("busy")
        return httpx.Response(503, text="busy")

    with _influx(busy) as client:
        rows.resume(client)
        off = rows.rows([lamp("SL-1", 5, 0.5)])
        assert (off.lines, off.owed) == ([], True)
        rows.recheck(client)  # not due yet: no query
        assert asked == ["busy"]
        clock[0] += latest_module.RESUME_RETRY_S
        rows.recheck(client)
        assert asked == ["busy", "busy"] and not rows.resumed
    clock[0] += latest_module.RESUME_RETRY_S
    with _influx(_found) as client:
        rows.recheck(client)
    assert rows.resumed and rows.writer == "worker-1"
    assert rows.rows([lamp("SL-1", 30, 3.0)]).lines == []  # what it holds was read back
    point = parse_line(rows.rows([lamp("SL-1", 31, 3.1)]).lines[0])
    assert point.tags["writer"] == "worker-1"


def test_a_field_whose_type_changes_gets_another_key() -> None:
    # InfluxDB keeps one type per field key in a shard, and the rows live in one shard for ever.
    assert layout.key_of("streetlight", "level", "integer") != layout.key_of(
        "streetlight", "level", "number"
    )


def test_slots_fall_in_the_first_shard_group_of_an_infinite_policy() -> None:
    week_ns = 7 * 86400 * 10**9
    slots = [layout.slot_of(f"SL-{n:06d}") for n in range(10_000)]
    assert all(0 <= slot < week_ns for _, slot in slots)
    assert len({bucket for bucket, _ in slots}) == layout.BUCKETS
    assert len(set(slots)) == len(slots)


def test_devices_sharing_a_slot_are_found(monkeypatch: pytest.MonkeyPatch) -> None:
    assert api_rows.collided(f"SL-{n:06d}" for n in range(10_000)) == []
    real = layout.place_of
    monkeypatch.setattr(layout, "place_of", lambda d: 1 if d in ("SL-7", "WP-3") else real(d))
    assert api_rows.collided(["SL-1", "SL-7", "SL-2", "WP-3"]) == ["SL-7", "WP-3"]


def test_rows_are_read_back_typed_and_within_the_lookback() -> None:
    profile = PROFILES["streetlight"]
    keys = [layout.key_of("streetlight", n, s.type.value) for n, s in profile.fields.items()]
    at_power = keys.index(POWER)

    def row(device: object, at: object, power: object) -> tuple[object, ...]:
        values: list[object] = [None] * len(keys)
        values[at_power] = power
        return (1, device, at, f"{DIGEST}:4", *values)

    series = Series(
        layout.MEASUREMENT,
        {},
        ("time", layout.DEVICE, layout.AT, layout.HAS, *keys),
        (row("SL-1", 100, 42), row("SL-2", 5, 1.5), row(None, 100, 1.0)),
    )
    found = api_rows.rows_of(profile, [series], since_ns=10)
    # SL-2 is older than the lookback; a row without a device id is no row.
    assert found.device_ids == ["SL-1"]
    assert found.times == [100]
    assert [row[found.fields["powerConsumption"]] for row in found.rows] == [42]
    assert set(found.fields) == set(profile.fields)


def _read_back(lines: list[str]) -> api_rows.Chunk:
    """Rows written one over another as InfluxDB keeps them (a point written again keeps the
    fields the new one lacks), then read back as a start reads them."""
    profile = PROFILES["streetlight"]
    columns = (
        "time",
        layout.DEVICE,
        layout.AT,
        layout.HAS,
        *(layout.key_of("streetlight", n, kind) for n, kind in profile.field_types().items()),
    )
    merged: dict[str, object] = {}
    for line in lines:
        merged.update(parse_line(line).fields)
    series = Series(layout.MEASUREMENT, {}, columns, (tuple(merged.get(c) for c in columns),))
    return api_rows.rows_of(profile, [series], since_ns=0)


def _lamp_at(time_ns: int, fields: dict[str, FieldValue]) -> Enriched:
    return Enriched("streetlight", "SL-1", "North", time_ns, fields)


# A lamp's two messages of one time, {"powerState": "on", "temperature": 21.0} then
# {"powerState": "off", "powerConsumption": 4.0}: one point of both, the later's state.
BOTH = {"powerState": "off", "temperature": 21.0, "powerConsumption": 4.0}


def _served(found: api_rows.Chunk) -> dict[str, object]:
    """The fields a start takes from the first row read back, absent ones left out."""
    values = {name: found.rows[0][at] for name, at in found.fields.items()}
    return {name: value for name, value in values.items() if value is not None}


def test_a_row_written_again_gives_only_the_newer_reading_s_fields() -> None:
    # Most fields are optional: a reading without the temperature must not be read back with
    # the one before's.
    rows = keeper()
    first = rows.rows([_lamp_at(10, {"powerState": "on", "temperature": 21.0})])
    rows.stored(first)
    second = rows.rows([_lamp_at(20, {"powerState": "off"})])
    found = _read_back(first.lines + second.lines)
    assert found.times == [20]
    assert found.alone(found.rows[0])
    assert _served(found) == {"powerState": "off"}


def test_a_row_without_has_or_of_another_profile_version_is_taken_whole() -> None:
    # Written before `has`, or by a version whose profile had other fields: what it holds.
    before = f'{layout.MEASUREMENT},w=1 device="SL-1",at=20i,{TEMPERATURE}=21.0,{STATE}="on" 1'
    other = before.replace("at=20i,", 'at=20i,has="ffff:1",')
    for line in (before, other):
        found = _read_back([line])
        assert found.rows[0][found.fields["temperature"]] == 21.0
        assert not found.alone(found.rows[0])  # lends no field to a row of its time


def test_messages_of_one_timestamp_in_a_batch_make_one_row_of_both() -> None:
    # One InfluxDB point: the later message's fields over the earlier's.
    rows = keeper().rows(
        [
            _lamp_at(10, {"powerState": "on", "temperature": 21.0}),
            _lamp_at(10, {"powerState": "off", "powerConsumption": 4.0}),
        ]
    )
    found = _read_back(rows.lines)
    assert _served(found) == BOTH


def test_messages_of_one_timestamp_in_two_batches_make_one_row_of_both() -> None:
    """A batch boundary between a device's two messages of one timestamp: the second batch
    writes the row again with its fields and both masks, as the point merged them; once it is
    no longer among the last RECENT_WRITES writes, the row is left as it is (and says so)."""
    rows = keeper()
    first = rows.rows([_lamp_at(10, {"powerState": "on", "temperature": 21.0})])
    rows.stored(first)
    second = rows.rows([_lamp_at(10, {"powerState": "off", "powerConsumption": 4.0})])
    rows.stored(second)
    found = _read_back(first.lines + second.lines)
    assert _served(found) == BOTH
    for _ in range(RECENT_WRITES):
        rows.stored(rows.rows([lamp("SL-2", 10, 1.0)]))
    assert rows.rows([_lamp_at(10, {"powerState": "on"})]).lines == []


def _restarted(lines: list[str]) -> LatestRows:
    """A keeper of the same writer started again, reading back its rows as InfluxDB holds
    them after `lines` (a point written again keeps the fields the new one lacks), grouped by
    profile as resume asks."""
    merged: dict[tuple[str, str, int], dict[str, object]] = {}  # per point: profile, bucket, slot
    for line in lines:
        point = parse_line(line)
        key = (point.tags["profile"], point.tags["bucket"], point.time_ns)
        merged.setdefault(key, {}).update(point.fields)
    columns = ["time", layout.DEVICE, layout.AT, layout.HAS]
    series = [
        {
            "name": layout.MEASUREMENT,
            "tags": {"profile": profile},
            "columns": columns,
            "values": [
                [key[2], *(fields.get(c) for c in columns[1:])]
                for key, fields in merged.items()
                if key[0] == profile
            ],
        }
        for profile in sorted({key[0] for key in merged})
    ]

    def answer(request: httpx.Request) -> httpx.Response:
        assert "GROUP BY" in parse_qs(request.content.decode())["q"][0]
        results = [{"statement_id": 0, "series": series}]
        return httpx.Response(200, json={"results": results})

    return _resumed_from(answer)


def test_messages_of_one_timestamp_either_side_of_a_restart_make_one_row_of_both() -> None:
    """The broker held a device's second message of one timestamp over a restart of its
    worker (or delivered it again): the row's mask read back at start stands in for the one
    remembered, and the row is written again with both, as the point merged them."""
    first = keeper().rows([_lamp_at(10, {"powerState": "on", "temperature": 21.0})])
    again = _restarted(first.lines)
    second = again.rows([_lamp_at(10, {"powerState": "off", "powerConsumption": 4.0})])
    found = _read_back(first.lines + second.lines)
    assert _served(found) == BOTH
    assert found.alone(found.rows[0])  # its `has` names the three: a mask, not taken whole


def test_a_mask_read_back_is_used_only_while_its_row_holds_the_stored_time() -> None:
    first = keeper().rows([_lamp_at(10, {"powerState": "on", "temperature": 21.0})])
    # Refused by InfluxDB after the restart: the newer time is stored, its row was not, and the
    # mask read back (of the row at 10) says nothing of a message at 20.
    again = _restarted(first.lines)
    refused = again.rows([_lamp_at(20, {"powerState": "off"})])
    again.stored(refused, rows_taken=False)
    assert again.rows([_lamp_at(20, {"powerState": "on"})]).lines == []
    # A row written by a version whose profile had other fields: its mask is not ours.
    other = [line.replace(f'has="{DIGEST}:', 'has="ffff:') for line in first.lines]
    assert other != first.lines
    assert _restarted(other).rows([_lamp_at(10, {"powerState": "off"})]).lines == []
    # The device's row of another profile is newer (its profile changed in the registry).
    pipe = Enriched("water_pipe", "SL-1", "North", 30, {"pressure": 3.0})
    newer = LatestRows("worker-1", PROFILES, lambda: {"SL-1": _as_pipe("SL-1")})
    with _influx(_none) as client:
        newer.resume(client)
    both = _restarted([*first.lines, *newer.rows([pipe]).lines])
    assert both.rows([_lamp_at(30, {"powerState": "off"})]).lines == []
    # An older row of another profile (read back after it) leaves the profile's own mask.
    older = _restarted(
        [
            *first.lines,
            *newer.rows([Enriched("water_pipe", "SL-1", "North", 5, {"pressure": 3.0})]).lines,
        ]
    )
    assert len(older.rows([_lamp_at(10, {"powerState": "off"})]).lines) == 1


def test_a_write_given_up_forgets_the_masks_of_its_devices() -> None:
    """A batch spooled after InfluxDB may have taken its rows (they go before the marks): the
    row may hold the newer reading's fields now, so a message of the time remembered (read
    back, or of a recent write) no longer writes the row again with that time's mask."""
    warm = _lamp_at(10, {"powerState": "on", "temperature": 21.0})
    read_back = _restarted(keeper().rows([warm]).lines)
    remembered = keeper()
    remembered.stored(remembered.rows([warm]))
    for rows in (read_back, remembered):
        same_time = _lamp_at(10, {"powerState": "on", "powerConsumption": 4.0})
        assert len(rows.rows([same_time]).lines) == 1  # the mask known: written again
        rows.unsure(rows.rows([_lamp_at(20, {"powerState": "off", "temperature": 30.0})]))
        assert rows.rows([same_time]).lines == []
        # Its time is not raised: a later reading between the two still gets its row.
        assert len(rows.rows([_lamp_at(15, {"powerState": "on"})]).lines) == 1


def _as_pipe(device_id: str) -> Device:
    return Device(
        device_id=device_id, profile="water_pipe", district="North", latitude=30.0, longitude=120.0
    )


def _state(tmp_path: Path) -> LiveState:
    path = tmp_path / "registry.csv"
    path.write_text(
        "device_id,profile,district,latitude,longitude,address\n"
        "SL-1,streetlight,North,30.2,120.1,\n"
        "SL-2,streetlight,North,30.2,120.1,\n"
        "WP-1,water_pipe,North,30.2,120.1,\n"
    )
    contract = Contract.build(PROFILES, load_registry(path, PROFILES))
    return LiveState(contract, Hub(10), late_after=1.5, silent_after=3.0)


def test_rows_load_newest_first_into_the_state(tmp_path: Path) -> None:
    state = _state(tmp_path)
    state.apply("SL-2", "streetlight", 500, {"powerConsumption": 9.0}, 0)  # the feed, before
    # SL-1 twice (two writers' rows, the newer last), SL-2 older than the feed's reading, WP-1
    # under another profile, SL-9 not registered. A row: power, then state.
    rows = [(1, "on"), (2.5, None), (4.0, "on"), (3.0, "on"), (3.0, "on")]
    taken = state.load_rows(
        "streetlight",
        ["SL-1", "SL-1", "SL-2", "WP-1", "SL-9"],
        [100, 200, 400, 300, 300],
        rows,
        {"powerConsumption": 0, "powerState": 1},
    )
    assert taken == 2
    assert state.reading_of(state.index["SL-1"]) == Reading(200, {"powerConsumption": 2.5})
    assert state.reading_of(state.index["SL-2"]) == Reading(500, {"powerConsumption": 9.0})
    assert state.reading_of(state.index["WP-1"]) is None
    # Not once the state serves: that path announces and judges (LiveState.load).
    state.loaded = True
    with pytest.raises(RuntimeError):
        state.load_rows("streetlight", [], [], [], {})


def test_rows_of_one_time_from_two_writers_merge_as_their_point_did(tmp_path: Path) -> None:
    """A lamp sent its power and its state in two messages of one timestamp, taken by two
    workers: InfluxDB holds one point of both, each writer a row of one. Both are served; a
    newer row in the same answer still replaces them, whatever their order. A row's third
    value says whether its `has` was checked (Chunk.alone): one taken whole may hold an older
    reading's fields, and lends none; a field the device holds keeps its value."""
    state = _state(tmp_path)
    fields = {"powerConsumption": 0, "powerState": 1}

    def alone(row: Sequence[object]) -> bool:
        return row[2] == "checked"

    taken = state.load_rows(
        "streetlight",
        ["SL-1", "SL-1", "SL-1", "SL-2", "SL-2", "SL-2"],
        [100, 100, 100, 100, 100, 200],
        [
            (2.5, None, "checked"),
            (None, "off", "whole"),  # lends nothing
            (9.9, "on", "checked"),  # the power held keeps its value
            (1.0, None, "checked"),
            (None, "on", "checked"),
            (4.0, None, "checked"),
        ],
        fields,
        alone=alone,
    )
    assert taken == 3  # rows that were the newest when read: SL-1's first, SL-2's 100 and 200
    assert state.reading_of(state.index["SL-1"]) == Reading(
        100, {"powerConsumption": 2.5, "powerState": "on"}
    )
    assert state.reading_of(state.index["SL-2"]) == Reading(200, {"powerConsumption": 4.0})
    # A later chunk's row of the held time merges too; an older one is history.
    state.load_rows(
        "streetlight",
        ["SL-2", "SL-2"],
        [200, 150],
        [(None, "off", "checked"), (9.0, "on", "checked")],
        fields,
        alone=alone,
    )
    assert state.reading_of(state.index["SL-2"]) == Reading(
        200, {"powerConsumption": 4.0, "powerState": "off"}
    )


def test_a_refused_row_is_logged_and_no_dead_letter(caplog: pytest.LogCaptureFixture) -> None:
    rows = keeper()
    pending = rows.rows([lamp("SL-1", 30, 3.0)])
    reading = BadLine("streetlight,device_id=SL-2 x=1 1", "type conflict")
    row = BadLine(pending.lines[0], "field type conflict")
    bad, refused = rows.settle(pending, [reading, row])
    assert (bad, refused) == ([reading], 1)  # only the reading goes on to be dead-lettered
    assert not pending.owed and rows.owed(pending.owed) == []  # nothing owed before the write
    assert "InfluxDB refused a latest row: field type conflict" in caplog.text
    assert rows.rows([lamp("SL-1", 20, 2.0)]).lines == []  # remembered all the same
    # Its mask is not: a message of its time is not written over a row InfluxDB never took.
    assert rows.rows([lamp("SL-1", 30, 3.0)]).lines == []


def _refuses_writes(request: httpx.Request) -> httpx.Response:
    """InfluxDB 1.x refusing every line of a write (a field type conflict)."""
    error = 'partial write: field type conflict: input field "writer" is type string, already'
    return httpx.Response(400, json={"error": f"{error} exists as type integer dropped=1"})


def _worker() -> Worker:
    return Worker(
        IngestSettings(topic_root="city", spool_dir=None, http_port=0, registry_check=0),
        PROFILES,
        Registry(devices=REGISTRY, source="test", districts=("North",)),
    )


def test_an_owed_mark_influxdb_refuses_is_logged_and_counted_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A row refused makes the worker store an owed mark before the batch is acknowledged; a
    refused mark must not pass silently (alert CitySenseLatestOwedLost)."""
    worker = _worker()
    rows = keeper()
    pending = rows.rows([lamp("SL-1", 30, 3.0)])
    refused_row = [BadLine(pending.lines[0], "field type conflict")]
    with _influx(_refuses_writes) as client:
        writer = Writer(client, worker.stats, threading.Event())
        assert worker._rows_stored(rows, pending, refused_row, writer) == []
    counts = worker.stats.snapshot()
    assert (counts["latest_rows_refused"], counts["latest_rows_owed"]) == (1, 1)
    assert counts["latest_owed_lost"] == 1
    assert "could not store an owed mark" in caplog.text


def test_an_owed_mark_a_write_carried_refused_is_counted_lost_not_dead_lettered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The keeper off (no `latest` policy): the write carries the owed mark with the readings.
    Refused, it is not a reading: it must not reach the dead letters or the readings' counts."""
    worker = _worker()
    rows = keeper()
    with _influx(_no_policy) as client:
        rows.resume(client)
    pending = rows.rows([lamp("SL-1", 30, 3.0)])
    (owed,) = rows.owed(pending.owed)
    reading = BadLine("streetlight,device_id=SL-2 x=1 1", "type conflict")
    with _influx(_refuses_writes) as client:
        writer = Writer(client, worker.stats, threading.Event())
        bad = [reading, BadLine(owed, "field type conflict")]
        assert worker._rows_stored(rows, pending, bad, writer) == [reading]
    counts = worker.stats.snapshot()
    assert (counts["latest_owed_lost"], counts["latest_rows_owed"]) == (1, 1)
    assert "could not store an owed mark" in caplog.text


def test_replay_does_not_count_a_refused_owed_mark_as_a_refused_reading(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`citysense replay` writes as the worker does; its keeper off, the owed mark goes in the
    write, and refused it is logged, not returned as a reading still refused."""
    worker = _worker()
    rows = keeper()
    with _influx(_no_policy) as client:
        rows.resume(client)
    with _influx(_refuses_writes) as client:
        replayer = Replayer(worker.pipeline, Writer(client, worker.stats, threading.Event()), rows)
        refused = replayer._write(["streetlight,device_id=SL-1 x=1 1"], [lamp("SL-1", 30, 3.0)])
    # This InfluxDB refuses every line: the reading and its change mark come back, the mark not.
    assert [item.line.split(",")[0] for item in refused] == ["streetlight", "citysense_changes"]
    assert "could not store an owed mark" in caplog.text
    assert replayer.owed_lost == 1  # the run ends failed (ingest.replay.main)


def test_a_compaction_keeps_only_rows_no_other_writer_holds_as_new() -> None:
    none = NO_TIME
    # Per device: the state's reading, other writers' newest row, the named full load's row.
    times = array("q", [50, 50, 50, none, 40])
    others = array("q", [60, 50, 10, none, none])
    named = array("q", [50, 50, 50, none, 40])
    assert compact.uncovered(times, others) == [2, 4]  # newer than others, or others have none
    assert compact.held(named) == 4
    assert compact.behind(times, others, named) == 0
    # A state older than the named rows (loaded before them): compacting would move them back.
    assert compact.behind(array("q", [50, 50, 30, none, 40]), others, named) == 1


def test_a_full_load_s_tag_tells_when_it_began() -> None:
    tag = layout.full_load_tag(1_800_000_000)
    assert tag.startswith(layout.FULL_LOAD)
    assert layout.full_load_began(tag) == 1_800_000_000
    assert layout.full_load_began("citysense-ingest-1") is None
    assert layout.full_load_began("full-load/12-x'; DROP") is None  # only the tag's own shape
    point = parse_line(layout.complete_line("by", 1, "", tag))
    assert layout.recorded_rows(point.fields) == tag
    assert layout.recorded_rows({}) == ""  # a point from before full loads were named
