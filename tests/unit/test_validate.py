"""Decode and validate: each rejection reason, for a message and for a reading; fakes only."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from device_profiles import load_profiles
from ingest.decode import Decoded, DecodeLimits, decode
from ingest.stages import Received, Rejected
from ingest.validate import CompiledProfile, Invalid, parse_timestamp, validate
from wire.reasons import Reason
from wire.topics import TopicLayout

PROFILES = load_profiles()
LAYOUT = TopicLayout("city")
NOW_NS = time.time_ns()
NOW_MS = NOW_NS // 1_000_000
LIGHT = CompiledProfile.compile(PROFILES["streetlight"])
PIPE = CompiledProfile.compile(PROFILES["water_pipe"])


def msg(payload: bytes | Any, topic: str = "city/streetlight/SL-000001/telemetry") -> Received:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return Received(topic, raw, 1, 1, NOW_NS)


def reason_of(result: object) -> Reason:
    assert isinstance(result, Rejected | Invalid), result
    return result.reason


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("city/streetlight/SL-1/status", {}, Reason.BAD_TOPIC),
        ("other/streetlight/SL-1/telemetry", {}, Reason.BAD_TOPIC),
        ("city/streetlight//telemetry", {}, Reason.BAD_TOPIC),
        ("city/streetlight/a/b/telemetry", {}, Reason.BAD_TOPIC),
        ("city/teapot/SL-1/telemetry", {}, Reason.UNKNOWN_PROFILE),
        ("city/streetlight/SL-1/telemetry", b"{not json", Reason.INVALID_JSON),
        ("city/streetlight/SL-1/telemetry", b"\xff\xfe{}", Reason.INVALID_UTF8),
        ("city/streetlight/SL-1/telemetry", b'{"voltage": NaN}', Reason.NON_FINITE),
        ("city/streetlight/SL-1/telemetry", b'{"voltage": Infinity}', Reason.NON_FINITE),
        ("city/streetlight/SL-1/telemetry", b"42", Reason.BAD_SHAPE),
        ("city/streetlight/SL-1/telemetry", b"[]", Reason.BAD_SHAPE),
        ("city/streetlight/SL-1/telemetry", b"[1, 2]", Reason.BAD_SHAPE),
        ("city/streetlight/SL-1/telemetry", b"[" * 20 + b"]" * 20, Reason.TOO_DEEP),
        ("city/streetlight/SL-1/telemetry", b" " * 70_000, Reason.PAYLOAD_TOO_LARGE),
    ],
)
def test_message_level_rejections(topic: str, payload: Any, reason: Reason) -> None:
    result = decode(msg(payload, topic), LAYOUT, PROFILES, DecodeLimits())
    assert reason_of(result) is reason
    assert isinstance(result, Rejected)
    assert result.detail  # every rejection says why, in words


def test_too_many_readings_in_one_array() -> None:
    result = decode(msg([{"ts": 1}] * 11), LAYOUT, PROFILES, DecodeLimits(max_readings=10))
    assert reason_of(result) is Reason.BAD_SHAPE


def test_device_id_comes_from_topic() -> None:
    result = decode(
        msg({"ts": NOW_MS}, "city/water_pipe/WP-000009/telemetry"), LAYOUT, PROFILES, DecodeLimits()
    )
    assert isinstance(result, Decoded)
    assert result.device_id == "WP-000009"
    assert result.profile.profile == "water_pipe"


def good(**extra: Any) -> dict[str, Any]:
    return {"ts": NOW_MS, "powerState": "on", "powerConsumption": 120, **extra}


@pytest.mark.parametrize(
    ("reading", "reason"),
    [
        (good(powerConsumption="120"), Reason.WRONG_TYPE),
        (good(powerConsumption=True), Reason.WRONG_TYPE),
        (good(powerConsumption=None), Reason.WRONG_TYPE),
        (good(doorOpen=1), Reason.WRONG_TYPE),
        (good(powerState=1), Reason.WRONG_TYPE),
        (good(powerConsumption=-1), Reason.OUT_OF_RANGE),
        (good(powerConsumption=1e9), Reason.OUT_OF_RANGE),
        (good(illuminanceLevel=1.0001), Reason.OUT_OF_RANGE),
        (good(powerState="dazzling"), Reason.INVALID_VALUE),
        ({"ts": NOW_MS, "powerConsumption": 5}, Reason.MISSING_FIELD),
        (good(ts=NOW_MS + 3_600_000), Reason.TIMESTAMP_IN_FUTURE),
        (good(ts=0), Reason.TIMESTAMP_TOO_OLD),
        (good(ts="yesterday"), Reason.BAD_TIMESTAMP),
        (good(ts="2026-01-01T00:00:00"), Reason.BAD_TIMESTAMP),  # no zone: ambiguous
        (good(ts=[1]), Reason.BAD_TIMESTAMP),
        (good(device_id="SL-000002"), Reason.DEVICE_ID_MISMATCH),
    ],
)
def test_reading_rejections(reading: dict[str, Any], reason: Reason) -> None:
    assert reason_of(validate(LIGHT, "SL-000001", reading, NOW_NS)) is reason


def test_no_known_fields() -> None:
    result = validate(PIPE, "WP-1", {"ts": NOW_MS, "colour": "blue"}, NOW_NS)
    # pressure is required, so the missing required field is what is reported
    assert reason_of(result) is Reason.MISSING_FIELD


def test_valid_reading_is_canonical() -> None:
    reading = validate(LIGHT, "SL-000001", good(voltage=229, doorOpen=False, extra=1), NOW_NS)
    assert not isinstance(reading, Invalid)
    assert reading.time_ns == NOW_MS * 1_000_000
    # numbers are floats from the first write on, so no later 229.5 conflicts in InfluxDB
    assert reading.fields == {
        "powerState": "on",
        "powerConsumption": 120.0,
        "voltage": 229.0,
        "doorOpen": False,
    }
    assert type(reading.fields["voltage"]) is float


def test_integer_field_accepts_integral_float() -> None:
    reading = validate(PIPE, "WP-1", {"ts": NOW_MS, "pressure": 300, "rssi": -80.0}, NOW_NS)
    assert not isinstance(reading, Invalid)
    assert reading.fields["rssi"] == -80
    assert type(reading.fields["rssi"]) is int
    bad = validate(PIPE, "WP-1", {"ts": NOW_MS, "pressure": 300, "rssi": -80.5}, NOW_NS)
    assert reason_of(bad) is Reason.WRONG_TYPE


def test_missing_timestamp_is_stamped_with_receive_time() -> None:
    reading = validate(LIGHT, "SL-1", {"powerState": "off"}, NOW_NS)
    assert not isinstance(reading, Invalid)
    assert reading.time_ns == NOW_NS


@pytest.mark.parametrize(
    ("raw", "ns"),
    [
        (1_700_000_000, 1_700_000_000_000_000_000),
        (1_700_000_000_123, 1_700_000_000_123_000_000),
        (1_700_000_000.5, 1_700_000_000_500_000_000),
        (1_700_000_000_123.0, 1_700_000_000_123_000_000),
        ("2023-11-14T22:13:20Z", 1_700_000_000_000_000_000),
        ("2023-11-14T22:13:20.123Z", 1_700_000_000_123_000_000),
        ("2023-11-15T06:13:20.000123+08:00", 1_700_000_000_000_123_000),
    ],
)
def test_timestamp_forms(raw: object, ns: int) -> None:
    assert parse_timestamp(raw) == ns
