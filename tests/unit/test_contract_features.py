"""Issue 3's contract features, as pure logic: variants, units, sentinels, partial validity,
timestamp forms, duplicates and the unknown-device policy."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from common.influx import InfluxClient, InfluxConfig
from device_profiles import (
    DEFAULT_PROFILES,
    ContractError,
    Device,
    Profile,
    Registry,
    load_profiles,
    load_variants,
)
from device_profiles.units import conversion
from ingest.dedupe import Seen
from ingest.latest import LatestRows
from ingest.pipeline import Pipeline
from ingest.replay import Replayer
from ingest.stages import Received
from ingest.stats import Stats
from ingest.write import Writer
from wire.deadletters import encode_payload
from wire.lineproto import parse_line
from wire.reasons import Reason
from wire.topics import TopicLayout

PROFILES = load_profiles()
VARIANTS = load_variants(DEFAULT_PROFILES, PROFILES)
NOW_NS = time.time_ns()
NOW_MS = NOW_NS // 1_000_000


def registry(*devices: tuple[str, str, str]) -> Registry:
    entries = {
        d: Device(
            device_id=d, profile=p, district="Xihu", latitude=30.0, longitude=120.0, variant=v
        )
        for d, p, v in devices
    }
    return Registry(entries)


def run(pipeline: Pipeline, topic: str, payload: Any) -> tuple[list[str], list[Reason]]:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    outcome = pipeline.process(Received(topic, raw, 1, 1, NOW_NS))
    data = [line for line in outcome.lines if not line.startswith("dead_letters,")]
    return data, [r.reason for r in outcome.rejected]


def pipeline_for(reg: Registry, profiles: dict[str, Profile] | None = None, **kw: Any) -> Pipeline:
    variants = VARIANTS if profiles is None else {}
    return Pipeline(
        profiles or PROFILES, reg, TopicLayout("city"), Stats(), variants=variants, **kw
    )


def test_vendor_variant_lands_canonically() -> None:
    p = pipeline_for(registry(("LUM-1", "streetlight", "lumio")))
    payload = {
        "time": NOW_MS,
        "lamp": {"state": 1, "dim_pct": 80},
        "meter": {"p_w": 120.5, "i_ma": 550, "e_wh": 1234567, "pf_pct": 95},
        "cabinet": {"door": "open"},
        "health": "LAMP_FAIL",
    }
    lines, rejected = run(p, "city/streetlight/LUM-1/telemetry", payload)
    assert rejected == []
    (line,) = lines
    assert line.startswith("streetlight,device_id=LUM-1,district=Xihu ")
    assert line.endswith(f" {NOW_MS * 1_000_000}")
    fields = dict(f.split("=", 1) for f in line.split(" ")[1].split(","))
    assert fields == {
        "powerState": '"on"',
        "illuminanceLevel": "0.8",
        "powerConsumption": "120.5",
        "current": "0.55",
        "lifetimePowerConsumption": "1234.567",
        "powerFactor": "0.95",
        "doorOpen": "true",
        "status": '"defectiveLamp"',
    }


def test_variant_value_outside_its_map_is_rejected_precisely() -> None:
    p = pipeline_for(registry(("LUM-1", "streetlight", "lumio")))
    _, rejected = run(p, "city/streetlight/LUM-1/telemetry", {"time": NOW_MS, "lamp": {"state": 7}})
    assert rejected == [Reason.WRONG_TYPE]  # 7 is not mapped, and powerState is a string


@pytest.mark.parametrize(
    ("source", "target", "value", "expected"),
    [
        ("MPa", "kPa", 0.35, 350.0),
        ("bar", "kPa", 3.5, 350.0),
        ("kPa", "kPa", 350, 350),
        ("Wh", "kWh", 1500, 1.5),
        ("mA", "A", 550, 0.55),
        ("degF", "Cel", 212, 100.0),
    ],
)
def test_unit_conversions(source: str, target: str, value: float, expected: float) -> None:
    conv = conversion(source, target)
    assert conv is not None
    assert value * conv[0] + conv[1] == pytest.approx(expected)


def variant_file(tmp_path: Path, body: str) -> Path:
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "streetlight.yaml").write_text((DEFAULT_PROFILES / "streetlight.yaml").read_text())
    (folder / "v.yaml").write_text("variant: acme\nprofile: streetlight\nfields:\n" + body)
    return folder


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("  a: {to: nosuch}\n", "not a field"),
        ("  a: {to: voltage, unit: furlong}\n", "no conversion"),
        ("  a: {to: powerState, unit: V}\n", "non-numeric"),
        ("  a: {to: powerState, values: {'1': 'blazing'}}\n", "not allowed"),
    ],
)
def test_bad_variants_are_refused_with_line(tmp_path: Path, body: str, message: str) -> None:
    folder = variant_file(tmp_path, body)
    profiles = load_profiles(folder)
    with pytest.raises(ContractError) as info:
        load_variants(folder, profiles)
    (problem,) = info.value.problems
    assert message in problem.message
    assert problem.file == "v.yaml"
    assert problem.line == 4


def custom_profile(**changes: Any) -> dict[str, Profile]:
    data = PROFILES["water_pipe"].model_dump()
    data["fields"]["batteryLevel"]["sentinels"] = (-9999, 65535)
    data.update(changes)
    return {"water_pipe": Profile.model_validate(data)}


def test_sentinels_mean_no_data() -> None:
    p = pipeline_for(registry(("WP-1", "water_pipe", "")), custom_profile())
    lines, rejected = run(
        p, "city/water_pipe/WP-1/telemetry", {"ts": NOW_MS, "pressure": 300, "batteryLevel": 65535}
    )
    assert rejected == []
    assert "batteryLevel" not in lines[0]
    assert "pressure=300.0" in lines[0]


def test_drop_field_policy_keeps_good_fields_and_records_the_bad_one() -> None:
    profiles = custom_profile(on_invalid_field="drop_field")
    p = pipeline_for(registry(("WP-1", "water_pipe", "")), profiles)
    outcome = p.process(
        Received(
            "city/water_pipe/WP-1/telemetry",
            orjson.dumps({"ts": NOW_MS, "pressure": 300, "turbidity": -5, "flow": "x"}),
            1,
            1,
            NOW_NS,
        )
    )
    data = [line for line in outcome.lines if line.startswith("water_pipe")]
    assert len(data) == 1
    assert "pressure=300.0" in data[0]
    assert "turbidity" not in data[0]
    assert sorted((r.reason, r.detail.split(":")[0]) for r in outcome.rejected) == [
        (Reason.OUT_OF_RANGE, "field turbidity dropped"),
        (Reason.WRONG_TYPE, "field flow dropped"),
    ]
    # under the default policy the same reading is rejected whole
    strict = pipeline_for(registry(("WP-1", "water_pipe", "")), custom_profile())
    lines, rejected = run(
        strict, "city/water_pipe/WP-1/telemetry", {"ts": NOW_MS, "pressure": 300, "turbidity": -5}
    )
    assert (lines, rejected) == ([], [Reason.OUT_OF_RANGE])


def test_timestamp_forms_a_profile_does_not_accept() -> None:
    ts = PROFILES["water_pipe"].timestamp.model_copy(update={"forms": ("rfc3339",)})
    profiles = custom_profile(timestamp=ts.model_dump())
    p = pipeline_for(registry(("WP-1", "water_pipe", "")), profiles)
    _, rejected = run(p, "city/water_pipe/WP-1/telemetry", {"ts": NOW_MS, "pressure": 1})
    assert rejected == [Reason.BAD_TIMESTAMP]


def test_duplicates_and_conflicts() -> None:
    p = pipeline_for(registry(("WP-1", "water_pipe", "")))
    topic = "city/water_pipe/WP-1/telemetry"
    assert run(p, topic, {"ts": NOW_MS, "pressure": 300})[1] == []
    assert run(p, topic, {"ts": NOW_MS, "pressure": 300})[1] == [Reason.DUPLICATE]
    assert run(p, topic, {"ts": NOW_MS, "pressure": 301})[1] == [Reason.TIMESTAMP_CONFLICT]
    assert run(p, topic, {"ts": NOW_MS + 1000, "pressure": 300})[1] == []


def test_the_seen_given_is_the_one_dedupe_uses() -> None:
    """The worker's own Seen (its window setting; its forget() of a reading InfluxDB refused)
    is the one the pipeline checks, empty as it is when given."""
    topic = "city/water_pipe/WP-1/telemetry"
    seen = Seen(10)
    p = pipeline_for(registry(("WP-1", "water_pipe", "")), seen=seen)
    assert run(p, topic, {"ts": NOW_MS, "pressure": 300})[1] == []
    seen.forget("water_pipe", "WP-1", NOW_MS * 1_000_000)  # refused: not stored after all
    assert run(p, topic, {"ts": NOW_MS, "pressure": 300})[1] == []  # the resend is stored
    assert run(p, topic, {"ts": NOW_MS, "pressure": 300})[1] == [Reason.DUPLICATE]
    off = pipeline_for(registry(("WP-1", "water_pipe", "")), seen=Seen(0))  # window 0: none
    for _ in range(2):
        assert run(off, topic, {"ts": NOW_MS, "pressure": 300})[1] == []


def test_a_duplicate_is_one_whichever_path_each_copy_takes() -> None:
    """The compiled path and the full one (here: a key the profile does not declare, other key
    order, another timestamp form) give dedupe the same digest of the same reading."""
    p = pipeline_for(registry(("PM-1", "power_meter", "")))
    topic = "city/power_meter/PM-1/telemetry"
    first = {"ts": NOW_MS, "activePower": 4.2, "voltageL1": 230, "frequency": 50.0}
    assert run(p, topic, first)[1] == []
    again = {"frequency": 50, "firmware": "4.2.1", "voltageL1": 230.0, "activePower": 4.2}
    again["ts"] = NOW_MS / 1000
    assert run(p, topic, again)[1] == [Reason.DUPLICATE]
    assert run(p, topic, {**again, "frequency": 50.5})[1] == [Reason.TIMESTAMP_CONFLICT]
    # and the other way round: first the full way, then the compiled one
    later = {"ts": NOW_MS + 1000, "activePower": 1.0, "firmware": "x"}
    assert run(p, topic, later)[1] == []
    assert run(p, topic, {"activePower": 1, "ts": NOW_MS + 1000})[1] == [Reason.DUPLICATE]


def test_a_newer_registry_replaces_what_was_kept_per_topic() -> None:
    """The pipeline keeps a topic's device and series (its route) until the registry changes."""
    p = pipeline_for(registry(("WP-1", "water_pipe", "")))
    topic = "city/water_pipe/WP-1/telemetry"
    lines, _ = run(p, topic, {"ts": NOW_MS, "pressure": 300})
    assert lines[0].startswith("water_pipe,device_id=WP-1,district=Xihu ")
    moved = Device(
        device_id="WP-1", profile="water_pipe", district="Binjiang", latitude=30.0, longitude=120.0
    )
    p.use_registry(Registry({"WP-1": moved}))
    lines, _ = run(p, topic, {"ts": NOW_MS + 1000, "pressure": 300})
    assert lines[0].startswith("water_pipe,device_id=WP-1,district=Binjiang ")
    p.use_registry(registry())
    assert run(p, topic, {"ts": NOW_MS + 2000, "pressure": 300})[1] == [Reason.UNKNOWN_DEVICE]


def test_a_vendor_field_no_mapping_takes_meets_the_unknown_fields_policy() -> None:
    """A LUMIO firmware update adding `meter.thd_pct`, or sending `"env": null` where a mapping
    looks inside: passed on under the dotted path, reported (the profile's `report`) and the
    reading stored; under `reject`, dead-lettered. The normalizer dropped them silently."""
    payload = {"time": NOW_MS, "lamp": {"state": 1}, "meter": {"p_w": 80, "thd_pct": 3}}
    payload |= {"env": None, "fw": "4.2"}
    reporting = pipeline_for(registry(("LUM-1", "streetlight", "lumio")))
    lines, rejected = run(reporting, "city/streetlight/LUM-1/telemetry", payload)
    assert rejected == [] and "powerConsumption=80.0" in lines[0] and "thd" not in lines[0]
    assert {f for _, f, _ in reporting.unknown.counts()} == {"meter.thd_pct", "env", "fw"}

    data = PROFILES["streetlight"].model_dump() | {"unknown_fields": "reject"}
    strict_profiles = {**PROFILES, "streetlight": Profile.model_validate(data)}
    strict = Pipeline(
        strict_profiles, registry(("LUM-1", "streetlight", "lumio")), TopicLayout("city"),
        Stats(), variants=load_variants(DEFAULT_PROFILES, strict_profiles),
    )  # fmt: skip
    lines, rejected = run(strict, "city/streetlight/LUM-1/telemetry", payload)
    assert lines == [] and set(rejected) == {Reason.UNKNOWN_FIELD}


def test_unknown_device_policy() -> None:
    strict = pipeline_for(registry())
    assert run(strict, "city/water_pipe/NEW-1/telemetry", {"ts": NOW_MS, "pressure": 1})[1] == [
        Reason.UNKNOWN_DEVICE
    ]
    lenient = pipeline_for(registry(), accept_unknown_devices=True)
    lines, rejected = run(lenient, "city/water_pipe/NEW-1/telemetry", {"ts": NOW_MS, "pressure": 1})
    assert rejected == []
    assert lines[0].startswith("water_pipe,device_id=NEW-1,district=unassigned ")
    # an id that would need escaping never becomes a tag, even when unknown devices are accepted
    _, rejected = run(lenient, "city/water_pipe/a=b,c/telemetry", {"ts": NOW_MS, "pressure": 1})
    assert rejected == [Reason.BAD_DEVICE_ID]


def test_unknown_devices_accepted_leave_nothing_kept_behind() -> None:
    """Any number of ids can come from devices the registry does not know: their series are
    escaped each time, not kept (each kept one was half a kilobyte for ever)."""
    lenient = pipeline_for(registry(("WP-1", "water_pipe", "")), accept_unknown_devices=True)
    for n in range(200):
        lines, _ = run(lenient, f"city/water_pipe/NEW-{n}/telemetry", {"ts": NOW_MS, "pressure": 1})
        assert lines[0].startswith(f"water_pipe,device_id=NEW-{n},district=unassigned ")
    run(lenient, "city/water_pipe/WP-1/telemetry", {"ts": NOW_MS, "pressure": 1})
    kept = lenient._encoder._series
    assert all(device_id == "WP-1" for _, device_id, _ in kept) and len(kept) <= 1


def test_a_replayed_reading_without_a_timestamp_lands_where_it_was_stored() -> None:
    """Drop-field policy, no timestamp: the reading is stored at its receive time without the bad
    field, which becomes a letter. Replayed, it is stamped with that receive time again (kept in
    the letter), so the stored point is written over, not a second one added at the letter's
    own later time (one more for every field dropped)."""
    profiles = custom_profile(on_invalid_field="drop_field")
    pipeline = pipeline_for(registry(("WP-1", "water_pipe", "")), profiles)
    raw = orjson.dumps({"pressure": 300, "turbidity": -5})
    outcome = pipeline.process(Received("city/water_pipe/WP-1/telemetry", raw, 1, 1, NOW_NS))
    stored, letter_line = outcome.lines
    assert stored.endswith(f" {NOW_NS}") and "turbidity" not in stored
    letter = parse_line(letter_line)
    assert letter.fields["received_ns"] == NOW_NS and letter.time_ns > NOW_NS

    written: list[str] = []

    def influx(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/write":
            written.extend(request.content.decode().splitlines())
            return httpx.Response(204)
        return httpx.Response(200, json={"results": [{"statement_id": 0}]})

    client = InfluxClient(InfluxConfig(), transport=httpx.MockTransport(influx))
    writer = Writer(client, Stats(), threading.Event())
    # `citysense replay` is a process of its own: its pipeline has seen nothing.
    fresh = pipeline_for(registry(("WP-1", "water_pipe", "")), profiles)
    latest = LatestRows("replay", profiles, lambda: fresh._registry.devices)
    latest.resume(client)
    replayer = Replayer(fresh, writer, latest)
    row = {"time": letter.time_ns, **letter.tags, **letter.fields}
    assert replayer.replay(row, dry_run=False).startswith("partly stored")
    (again,) = [line for line in written if line.startswith("water_pipe,")]
    assert again == stored


def test_a_replayed_letter_whose_reading_still_partly_fails_says_so() -> None:
    """Under the drop-field policy a reading passes without its bad field: a replay before the
    profile's fix stores it, and the letter must not read "stored" (done, not replayed again
    without --again) while a field of it is still refused."""
    profiles = custom_profile(on_invalid_field="drop_field")
    pipeline = pipeline_for(registry(("WP-1", "water_pipe", "")), profiles)

    def nothing(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"a dry run writes nothing: {request.url}")

    client = InfluxClient(InfluxConfig(), transport=httpx.MockTransport(nothing))
    writer = Writer(client, Stats(), threading.Event())
    replayer = Replayer(pipeline, writer, LatestRows("replay", profiles, dict))
    payload, encoding = encode_payload(
        orjson.dumps({"ts": NOW_MS, "pressure": 300, "turbidity": -5})
    )
    row = {
        "time": NOW_NS,
        "topic": "city/water_pipe/WP-1/telemetry",
        "reason": "out_of_range",
        "payload": payload,
        "payload_encoding": encoding,
    }
    assert replayer.replay(row, dry_run=True) == "partly stored, still rejected: out_of_range"
    good = orjson.dumps({"ts": NOW_MS + 1000, "pressure": 300})
    whole = {**row, "payload": encode_payload(good)[0]}
    assert replayer.replay(whole, dry_run=True) == "stored"
