"""Simulated fleets, checked from the outside: payloads are parsed with plain `json` and judged
against the profiles and the physics of a city day, never with the generator's own helpers."""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from device_profiles import (
    DEFAULT_REGISTRY,
    Device,
    FieldKind,
    FieldType,
    Profile,
    load_profiles,
    load_registry,
)
from simulators import cli
from simulators.fleet import ALL_FAULTS, ExpectedReading, SimMessage, generate
from wire.topics import TopicLayout

PROFILES = load_profiles()
REGISTRY = load_registry(DEFAULT_REGISTRY, PROFILES)
LAYOUT = TopicLayout("city")
END_MS = int(datetime(2026, 11, 22, 12, 0, tzinfo=UTC).timestamp() * 1000)
CITY_OFFSET_S = 8 * 3600  # the generator's default time zone
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
CORE_STREETLIGHT = {
    "powerState", "powerConsumption", "voltage", "current", "powerFactor", "illuminanceLevel",
    "lifetimePowerConsumption", "status",
}  # fmt: skip


def devices_of(profile: str, count: int) -> list[Device]:
    return REGISTRY.of(profile=profile)[:count]


def mixed(count_each: int) -> list[Device]:
    return [
        d for p in ("streetlight", "water_pipe", "power_meter") for d in devices_of(p, count_each)
    ]


def fleet(devices: list[Device], **options: Any) -> list[SimMessage]:
    options.setdefault("readings_per_device", 10)
    options.setdefault("end_ms", END_MS)
    return list(generate(devices, PROFILES, LAYOUT, **options))


def documents(message: SimMessage) -> list[dict[str, Any]]:
    parsed = json.loads(message.payload)
    return parsed if isinstance(parsed, list) else [parsed]


def ts_to_ns(value: object) -> int:
    """An independent reading of the three timestamp forms."""
    if isinstance(value, str):
        moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")
        return int(moment.replace(microsecond=0).timestamp()) * 10**9 + moment.microsecond * 1000
    assert type(value) is int, value
    return value * 10**9 if value < 10**11 else value * 10**6


def local_hour(time_ns: int) -> float:
    return ((time_ns // 10**9 + CITY_OFFSET_S) % 86400) / 3600


def readings(messages: Iterable[SimMessage]) -> Iterator[ExpectedReading]:
    for message in messages:
        yield from message.readings


def number(reading: ExpectedReading, field: str) -> float:
    value = reading.values[field]
    assert isinstance(value, float)
    return value


def check_value(profile: Profile, name: str, value: object) -> None:
    spec = profile.fields[name]
    if spec.type is FieldType.NUMBER:
        assert type(value) is float, (name, value)
    elif spec.type is FieldType.INTEGER:
        assert type(value) is int, (name, value)
    elif spec.type is FieldType.BOOLEAN:
        assert type(value) is bool, (name, value)
    elif spec.type is FieldType.STATE:
        assert value in (spec.values or ()), (name, value)
    if spec.range is not None:
        assert isinstance(value, int | float)
        assert spec.range[0] <= value <= spec.range[1], (name, value, spec.range)


# --- valid readings ---------------------------------------------------------------------------


def test_values_are_in_range_typed_and_match_the_expectations() -> None:
    messages = fleet(mixed(12), readings_per_device=40, array_ratio=0.3)
    assert {m.topic.split("/")[1] for m in messages} == {"streetlight", "water_pipe", "power_meter"}
    for message in messages:
        _root, profile_name, device_id, kind = message.topic.split("/")
        assert kind == "telemetry"
        profile = PROFILES[profile_name]
        assert message.fault is None and message.rejections == ()
        docs = documents(message)
        assert len(docs) == len(message.readings)
        for doc, expected in zip(docs, message.readings, strict=True):
            assert (expected.profile, expected.device_id) == (profile_name, device_id)
            assert expected.time_ns == ts_to_ns(doc.pop("ts"))
            assert doc == expected.values
            assert set(doc) <= set(profile.fields)
            assert {n for n, s in profile.fields.items() if s.required} <= set(doc)
            for name, value in doc.items():
                check_value(profile, name, value)
            if profile_name == "streetlight":
                assert set(doc) >= CORE_STREETLIGHT


def test_about_half_the_poles_carry_sensors() -> None:
    messages = fleet(devices_of("streetlight", 400), readings_per_device=1, array_ratio=0)
    with_sensors = sum("temperature" in m.readings[0].values for m in messages)
    assert 0.35 < with_sensors / len(messages) < 0.65


def test_counters_only_grow_per_device() -> None:
    counters = {
        name: [f for f, s in p.fields.items() if s.effective_kind is FieldKind.COUNTER]
        for name, p in PROFILES.items()
    }
    series: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for reading in readings(fleet(mixed(10), readings_per_device=200, array_ratio=0.2)):
        for field in counters[reading.profile]:
            value = reading.values[field]
            assert isinstance(value, float)
            series[(reading.device_id, field)].append((reading.time_ns, value))
    assert len(series) == 30
    for points in series.values():
        points.sort()
        values = [v for _, v in points]
        assert all(a <= b for a, b in itertools.pairwise(values))
        assert values[-1] > values[0]  # 200 readings of any device use some energy or water


def a_day_of(profile: str, count: int) -> list[ExpectedReading]:
    interval = PROFILES[profile].reporting_interval
    per_day = int(86400 / interval)
    return list(readings(fleet(devices_of(profile, count), readings_per_device=per_day)))


def test_streetlights_are_on_at_night_dimmed_after_midnight_and_off_at_noon() -> None:
    day = a_day_of("streetlight", 6)
    noon = [r for r in day if 11 <= local_hour(r.time_ns) < 13]
    evening = [r for r in day if 20 <= local_hour(r.time_ns) < 23]
    small_hours = [r for r in day if 1 <= local_hour(r.time_ns) < 4]
    assert noon and evening and small_hours
    for reading in noon:
        assert reading.values["powerState"] == "off"
        assert reading.values["illuminanceLevel"] == 0.0
        assert number(reading, "powerConsumption") <= 3.5  # standby only
    for reading in evening:
        assert reading.values["powerState"] in ("on", "bootingUp")
        assert reading.values["illuminanceLevel"] == 1.0
    for reading in small_hours:
        assert reading.values["powerState"] == "low"
        assert reading.values["illuminanceLevel"] == 0.5
    lit = [r for r in evening if r.values["status"] == "ok"]
    assert lit and all(30 * 0.98 <= number(r, "powerConsumption") <= 250 * 1.02 for r in lit)


def hourly_means(day: list[ExpectedReading], field: str) -> dict[int, float]:
    buckets: dict[int, list[float]] = defaultdict(list)
    for reading in day:
        buckets[int(local_hour(reading.time_ns))].append(number(reading, field))
    return {hour: sum(v) / len(v) for hour, v in buckets.items()}


def test_water_flow_is_lowest_at_night_and_pressure_highest() -> None:
    day = a_day_of("water_pipe", 20)
    flow = hourly_means(day, "flow")
    pressure = hourly_means(day, "pressure")
    assert min(flow, key=flow.__getitem__) in (2, 3)
    assert flow[7] > 3 * flow[3]  # the morning peak
    assert pressure[3] > pressure[7] + 50
    assert all(150 <= p <= 600 for p in pressure.values())


def test_power_meters_peak_in_the_evening() -> None:
    power = hourly_means(a_day_of("power_meter", 30), "activePower")
    assert power[20] > 2 * power[3]


# --- time -------------------------------------------------------------------------------------


def test_time_ns_matches_the_payload_timestamp_in_all_three_forms() -> None:
    forms: Counter[str] = Counter()
    for message in fleet(mixed(6), array_ratio=0.3):
        for doc, expected in zip(documents(message), message.readings, strict=True):
            ts = doc["ts"]
            if isinstance(ts, str):
                assert RFC3339_MS.match(ts), ts
                forms["rfc3339"] += 1
            elif ts < 10**11:
                forms["epoch_s"] += 1
            else:
                forms["epoch_ms"] += 1
            assert expected.time_ns == ts_to_ns(ts)
    assert set(forms) == {"rfc3339", "epoch_s", "epoch_ms"}


def test_backfill_ends_at_end_ms_spaced_by_the_reporting_interval() -> None:
    messages = fleet(mixed(5), readings_per_device=30, array_ratio=0.25)
    dues = [m.due_ms for m in messages]
    assert dues == sorted(dues)  # interleaved in the order a city sends them
    by_device: dict[str, list[int]] = defaultdict(list)
    for reading in readings(messages):
        by_device[reading.device_id].append(reading.time_ns)
    for device_id, times in by_device.items():
        profile = REGISTRY.devices[device_id].profile
        step = int(PROFILES[profile].reporting_interval * 10**9)
        assert len(times) == 30
        assert all(b - a == step for a, b in itertools.pairwise(times))
        assert END_MS * 10**6 - 30 * 10**9 < times[-1] <= END_MS * 10**6


def test_live_mode_starts_now_and_moves_forward() -> None:
    start = END_MS
    stream = generate(mixed(3), PROFILES, LAYOUT, readings_per_device=0, time_mode="live",
                      start_ms=start, interval_s=2)  # fmt: skip
    messages = list(itertools.islice(stream, 200))  # endless: take some
    assert [m.due_ms for m in messages] == sorted(m.due_ms for m in messages)
    times = [r.time_ns for r in readings(messages)]
    assert min(times) >= start * 10**6
    for message in messages:
        assert message.due_ms * 10**6 == max(r.time_ns for r in message.readings)


# --- determinism, arrays ------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_stream_and_another_seed_does_not() -> None:
    def payloads(seed: int) -> list[tuple[str, bytes]]:
        return [(m.topic, m.payload) for m in fleet(mixed(5), seed=seed, fault_ratio=0.2)]

    assert payloads(7) == payloads(7)
    assert payloads(7) != payloads(8)


def test_array_ratio_is_respected_and_arrays_hold_consecutive_readings() -> None:
    messages = fleet(mixed(30), readings_per_device=60, array_ratio=0.3, max_array=4)
    arrays = [m for m in messages if isinstance(json.loads(m.payload), list)]
    assert 0.25 < len(arrays) / len(messages) < 0.35
    for message in arrays:
        docs = documents(message)
        assert 2 <= len(docs) <= 4
        times = [ts_to_ns(d["ts"]) for d in docs]
        assert times == sorted(times) and len(set(times)) == len(times)
    assert not any(
        isinstance(json.loads(m.payload), list) for m in fleet(mixed(5), array_ratio=0.0)
    )


# --- faults -----------------------------------------------------------------------------------


def faulty(kind: str) -> list[SimMessage]:
    messages = fleet(mixed(8), readings_per_device=20, array_ratio=0.4, fault_ratio=1.0,
                     faults=[kind])  # fmt: skip
    hit = [m for m in messages if m.fault == kind]
    assert len(hit) > 50
    return hit


def test_malformed_messages_are_not_json() -> None:
    for message in faulty("malformed_json"):
        with pytest.raises(ValueError):  # JSONDecodeError is a ValueError
            json.loads(message.payload)
        assert message.readings == ()
        assert message.rejections == ("invalid_json",)


def numeric_fields(profile: str) -> dict[str, tuple[float, float]]:
    return {
        name: spec.range
        for name, spec in PROFILES[profile].fields.items()
        if spec.type in (FieldType.NUMBER, FieldType.INTEGER) and spec.range is not None
    }


def test_wrong_type_hits_one_reading_with_a_non_number() -> None:
    for message in faulty("wrong_type"):
        ranges = numeric_fields(message.topic.split("/")[1])
        docs = documents(message)
        bad = [
            d for d in docs
            if any(n in ranges and type(v) not in (int, float) for n, v in d.items())
        ]  # fmt: skip
        assert len(bad) == 1
        assert message.rejections == ("wrong_type",)
        good_times = sorted(ts_to_ns(d["ts"]) for d in docs if d is not bad[0])
        assert sorted(r.time_ns for r in message.readings) == good_times


def test_out_of_range_hits_one_reading_with_a_finite_value_outside_the_range() -> None:
    for message in faulty("out_of_range"):
        profile = PROFILES[message.topic.split("/")[1]]
        ranges = numeric_fields(profile.profile)
        docs = documents(message)
        outside = [
            (name, value)
            for doc in docs
            for name, value in doc.items()
            if name in ranges and not ranges[name][0] <= value <= ranges[name][1]
        ]
        assert len(outside) == 1
        name, value = outside[0]
        assert math.isfinite(value)
        expected_type = int if profile.fields[name].type is FieldType.INTEGER else float
        assert type(value) is expected_type
        assert message.rejections == ("out_of_range",)
        assert len(message.readings) == len(docs) - 1


def test_duplicates_repeat_the_previous_message_byte_for_byte() -> None:
    messages = fleet(mixed(8), readings_per_device=20, array_ratio=0.3, fault_ratio=0.2,
                     faults=["duplicate"])  # fmt: skip
    duplicates = 0
    for previous, message in itertools.pairwise(messages):
        if message.fault != "duplicate":
            continue
        duplicates += 1
        assert (message.topic, message.payload) == (previous.topic, previous.payload)
        assert previous.fault is None and previous.readings
        assert message.readings == ()
        assert message.rejections == ("duplicate",) * len(previous.readings)
    assert duplicates > 20


def test_fault_ratio_is_respected() -> None:
    messages = fleet(mixed(20), readings_per_device=50, fault_ratio=0.1,
                     faults=["malformed_json", "wrong_type", "out_of_range"])  # fmt: skip
    kinds = Counter(m.fault for m in messages)
    assert 0.08 < (len(messages) - kinds[None]) / len(messages) < 0.12
    assert set(kinds) == {None, "malformed_json", "wrong_type", "out_of_range"}


# --- profiles the simulator does not know, or edited by an operator -----------------------------


def edited(profile: str, **changes: Any) -> Profile:
    data = PROFILES[profile].model_dump()
    data.update(changes)
    return Profile.model_validate(data)


def test_an_edited_range_is_honoured_and_a_new_profile_gets_generic_values() -> None:
    street = PROFILES["streetlight"].model_dump()
    street["fields"]["voltage"]["range"] = (0, 221)  # tighter than the lamp's supply
    gas = {
        "profile": "gas_pipe",
        "reporting_interval": "5m",
        "fields": {
            "pressure": {"type": "number", "range": [2, 5], "required": True},
            "methane": {"type": "number", "range": [0, 100]},
            "volume": {"type": "number", "range": [0, 1e9], "kind": "counter"},
            "valve": {"type": "state", "values": ["open", "closed"]},
            "alarm": {"type": "boolean"},
            "samples": {"type": "integer", "range": [0, 10]},
        },
    }
    profiles = {
        "streetlight": Profile.model_validate(street),
        "gas_pipe": Profile.model_validate(gas),
    }
    devices = [
        *devices_of("streetlight", 5),
        *(Device(device_id=f"GP-{n}", profile="gas_pipe", district="Xihu", latitude=30.2,
                 longitude=120.1) for n in range(5)),
    ]  # fmt: skip
    messages = list(generate(devices, profiles, LAYOUT, readings_per_device=20, end_ms=END_MS))
    for message in messages:
        profile = profiles[message.topic.split("/")[1]]
        for doc in documents(message):
            doc.pop("ts")
            for name, value in doc.items():
                check_value(profile, name, value)
    gas_readings = [r for r in readings(messages) if r.profile == "gas_pipe"]
    assert gas_readings and all(set(r.values) == set(gas["fields"]) for r in gas_readings)


def test_only_the_timestamp_forms_a_profile_accepts_are_used() -> None:
    only_rfc = edited("water_pipe", timestamp={**PROFILES["water_pipe"].timestamp.model_dump(),
                                                "forms": ["rfc3339"]})  # fmt: skip
    messages = list(generate(devices_of("water_pipe", 6), {"water_pipe": only_rfc}, LAYOUT,
                             readings_per_device=5, end_ms=END_MS))  # fmt: skip
    assert all(isinstance(d["ts"], str) for m in messages for d in documents(m))


def test_under_drop_field_a_bad_field_leaves_the_rest_of_the_reading_expected() -> None:
    lenient = edited("water_pipe", on_invalid_field="drop_field")
    messages = list(generate(devices_of("water_pipe", 10), {"water_pipe": lenient}, LAYOUT,
                             readings_per_device=10, end_ms=END_MS, fault_ratio=1.0,
                             faults=["wrong_type"], array_ratio=0))  # fmt: skip
    for message in messages:
        (doc,) = documents(message)
        (reading,) = message.readings
        assert message.rejections == ("wrong_type",)
        numbers = {n for n, v in doc.items() if n not in {"ts", "leakDetected"}}
        bad = {n for n in numbers if type(doc[n]) not in (int, float)}
        assert len(bad) == 1 and not bad & {"pressure"}  # a required field is never the one hit
        assert set(reading.values) == set(doc) - {"ts"} - bad


def test_sentinel_values_are_never_used_as_faults() -> None:
    fields = PROFILES["water_pipe"].model_dump()["fields"]
    for spec in fields.values():
        if spec["type"] in ("number", "integer"):
            spec["sentinels"] = [-9999, "ERR"]
    with_sentinels = edited("water_pipe", fields=fields)
    messages = list(generate(devices_of("water_pipe", 10), {"water_pipe": with_sentinels},
                             LAYOUT, readings_per_device=20, end_ms=END_MS, fault_ratio=1.0,
                             faults=["wrong_type", "out_of_range"]))  # fmt: skip
    values = [v for m in messages for d in documents(m) for v in d.values()]
    assert -9999 not in values and "ERR" not in values


# --- arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"readings_per_device": 0},  # endless is for live mode only
        {"readings_per_device": -1},
        {"array_ratio": 1.5},
        {"max_array": 1},
        {"fault_ratio": -0.1},
        {"faults": ["bit_flip"]},
        {"time_mode": "replay"},
        {"interval_s": 0.5},
        {"readings_per_device": 3000},  # power meters: 31 days back, past max_age
    ],
)
def test_bad_arguments_are_refused_before_iterating(options: dict[str, Any]) -> None:
    options = {"readings_per_device": 5, **options}
    with pytest.raises(ValueError):
        generate(mixed(2), PROFILES, LAYOUT, **options)


def test_a_device_of_an_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        generate(mixed(1), {"streetlight": PROFILES["streetlight"]}, LAYOUT, readings_per_device=1)


def test_all_faults_are_the_four_documented_kinds() -> None:
    assert set(ALL_FAULTS) == {"malformed_json", "wrong_type", "out_of_range", "duplicate"}


# --- CLI (no broker needed) -----------------------------------------------------------------------


def test_pick_devices_keeps_each_profiles_share() -> None:
    devices = list(REGISTRY.devices.values())
    picked = cli.pick_devices(devices, 100)
    assert len(picked) == 100
    assert Counter(d.profile for d in picked) == {
        "streetlight": 60,
        "water_pipe": 20,
        "power_meter": 20,
    }
    assert cli.pick_devices(devices, None) == devices


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_writes_a_registry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "city.csv"
    assert cli.main(parse("--registry-out", str(out), "--city-size", "500")) == 0
    assert json.loads(capsys.readouterr().out) == {"registry": str(out), "devices": 500}
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 500 and Counter(r["profile"] for r in rows)["streetlight"] == 300


@pytest.mark.parametrize(
    ("env", "argv", "message"),
    [
        ({}, ("--devices", "0"), "--devices must be at least 1"),
        ({}, ("--fault-ratio", "0.1", "--faults", "bit_flip"), "unknown fault kind"),
        ({}, ("--rate", "-5"), "cannot be negative"),
        ({"CITYSENSE_MQTT_URL": "http://broker"}, (), "CITYSENSE_MQTT_URL"),
        ({"CITYSENSE_REGISTRY": "/nonexistent.csv"}, (), "cannot read registry"),
    ],
)
def test_cli_refuses_bad_settings_with_a_message(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    argv: tuple[str, ...],
    message: str,
) -> None:
    monkeypatch.setenv("CITYSENSE_MQTT_URL", "mqtt://127.0.0.1:1")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(parse(*argv)) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err
    assert captured.out == ""


def test_cli_reports_an_unreachable_broker(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CITYSENSE_MQTT_URL", "mqtt://127.0.0.1:1")
    assert cli.main(parse("--devices", "3", "--no-progress")) == 1
    assert "cannot reach the MQTT broker" in capsys.readouterr().err
