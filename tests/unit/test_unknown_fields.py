"""Fields a profile does not declare: ignored, reported or rejected as the profile says, and the
report bounded whatever names devices invent (issue 10, 9)."""

from __future__ import annotations

import time

from device_profiles import load_profiles
from ingest.unknown import OTHER, UnknownFields
from ingest.validate import CompiledProfile, Invalid, validate
from wire.reasons import Reason

PROFILES = load_profiles()
NOW_NS = time.time_ns()
READING = {"ts": NOW_NS // 1_000_000, "PWNED": 5.0, "powerConsumption": 3.0, "powerState": "on"}


def compiled(policy: str) -> CompiledProfile:
    profile = PROFILES["streetlight"].model_copy(update={"unknown_fields": policy})
    return CompiledProfile.compile(profile)


def test_report_is_the_default_and_keeps_the_reading_and_the_field() -> None:
    assert PROFILES["streetlight"].unknown_fields == "report"
    reading = validate(compiled("report"), "SL-1", READING, NOW_NS)
    assert not isinstance(reading, Invalid)
    assert reading.fields == {"powerConsumption": 3.0, "powerState": "on"}
    assert reading.unknown == (("PWNED", 5.0),)


def test_reject_dead_letters_the_reading() -> None:
    invalid = validate(compiled("reject"), "SL-1", READING, NOW_NS)
    assert isinstance(invalid, Invalid)
    assert invalid.reason is Reason.UNKNOWN_FIELD
    assert "PWNED" in invalid.detail


def test_ignore_stores_without_a_word() -> None:
    reading = validate(compiled("ignore"), "SL-1", READING, NOW_NS)
    assert not isinstance(reading, Invalid)
    assert reading.unknown == ()


def test_the_timestamp_and_the_device_id_are_not_unknown() -> None:
    reading = validate(compiled("report"), "SL-1", {**READING, "device_id": "SL-1"}, NOW_NS)
    assert not isinstance(reading, Invalid)
    assert [name for name, _ in reading.unknown] == ["PWNED"]


def test_the_record_counts_keeps_a_sample_and_is_bounded() -> None:
    record = UnknownFields(max_fields=2)
    record.note("streetlight", "SL-1", (("PWNED", 5.0),))
    record.note("streetlight", "SL-2", (("PWNED", 6.0), ("b", 1)))
    record.note("streetlight", "SL-3", (("c\n", 1), ("d", 2)))  # past the bound
    assert sorted(record.counts()) == sorted(
        [("streetlight", "PWNED", 2), ("streetlight", "b", 1), ("streetlight", OTHER, 2)]
    )
    [first, _] = record.sightings()
    assert (first["field"], first["device_id"], first["sample"]) == ("PWNED", "SL-1", "5.0")
    metrics = record.prometheus()
    assert (
        'citysense_ingest_unknown_fields_total{field="PWNED",profile="streetlight"} 2.0' in metrics
    )
