"""Fuzz: over 10,000 malformed and adversarial messages, shuffled among valid ones, through the real
broker into a real ingest process, and every one accounted for exactly.

What must hold (issue 3): ingest stays up; every valid reading is stored with its values (by
device and time, in its canonical measurement, under its registry district); every bad message
or reading is one dead letter with its expected reason, topic, profile, device and payload; the
counts match exactly; and nothing a device sends adds a measurement, a tag, a field or a series
that the contract does not name. Expectations come from tests/support/fuzz_messages.py, which
writes them from the contract, not from ingest's code.
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from citysense.servers import LocalServers
from common.influx import InfluxConfig
from common.mqtturl import MqttUrl
from device_profiles import FieldType, Registry
from tests.support.fuzz_messages import (
    FORBIDDEN_LEVELS,
    MAX_DEPTH,
    MAX_PAYLOAD,
    MAX_READINGS,
    PROFILES,
    UNKNOWN,
    FuzzSet,
    build,
    load_city,
    raw_publish,
    summary,
    write_registry,
)
from tests.support.influx import rows
from tests.support.mqtt import publish
from tests.support.polling import wait_for
from tests.support.processes import IngestProcess, ingest_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = 20_261_122
DEAD_LETTER_MAX_PAYLOAD = 8192
# Every reason code a device can cause with the shipped profiles. Not here: missing_timestamp
# (every shipped profile stamps the receive time instead; checked as stored readings),
# no_fields (every profile has a required field, so missing_field comes first), bad_device_id
# (only with unknown devices accepted), write_rejected and internal_error (not a device's doing).
REASONS = {
    "bad_topic", "unknown_profile", "payload_too_large", "invalid_utf8", "invalid_json",
    "non_finite", "too_deep", "bad_shape", "unknown_device", "profile_mismatch",
    "device_id_mismatch", "bad_timestamp", "timestamp_in_future", "timestamp_too_old",
    "wrong_type", "out_of_range", "invalid_value", "missing_field", "duplicate",
    "timestamp_conflict",
}  # fmt: skip
FIELD_TYPES = {
    FieldType.NUMBER: "float",
    FieldType.INTEGER: "integer",
    FieldType.BOOLEAN: "boolean",
    FieldType.STATE: "string",
    FieldType.TEXT: "string",
}
DEAD_LETTER_FIELDS = {
    "topic": "string",
    "device_id": "string",
    "detail": "string",
    "payload": "string",
    "payload_encoding": "string",
    "payload_bytes": "integer",
    "truncated": "boolean",
    "received_ns": "integer",
}
TAGS = ("time", "device_id", "district")

LetterKey = tuple[str, str, str, str, int, bytes]


# What the fuzz ingest runs with: the limits the expectations are written for, stated rather than
# assumed, and ingest's own longest retry delay (not the 1 s ingest_env sets for fault scenarios).
INGEST_ENV: dict[str, str | None] = {
    "CITYSENSE_RETRY_MAX": None,
    "CITYSENSE_MAX_PAYLOAD_BYTES": str(MAX_PAYLOAD),
    "CITYSENSE_MAX_JSON_DEPTH": str(MAX_DEPTH),
    "CITYSENSE_MAX_READINGS_PER_MESSAGE": str(MAX_READINGS),
    "CITYSENSE_DEAD_LETTER_MAX_PAYLOAD": str(DEAD_LETTER_MAX_PAYLOAD),
    "CITYSENSE_UNKNOWN_DEVICES": "reject",
    "CITYSENSE_DEDUPE_WINDOW": "200000",
}


@pytest.fixture
def city(tmp_path: Path) -> tuple[Path, Registry]:
    """The sample city plus LUMIO lamp controllers (the vendor variant), as ingest will load it."""
    path = tmp_path / "city.csv"
    write_registry(path)
    return path, load_city(path)


def test_fuzz_through_the_broker(
    servers: LocalServers,
    influx: InfluxConfig,
    topic_root: str,
    tmp_path: Path,
    city: tuple[Path, Registry],
) -> None:
    path, registry = city
    fuzz = build(topic_root, registry, seed=SEED)
    bad = fuzz.bad
    valid = [m for m in fuzz.messages if not m.letters]
    assert len(bad) >= 10_000
    assert len(valid) >= 5_000
    assert {letter.reason for letter in fuzz.letters} == REASONS  # every reason covered
    assert all(len(m.letters) == 1 for m in bad)  # one bad thing per message
    print(f"\n{len(fuzz.messages)} messages: {len(valid)} valid, {len(bad)} bad")
    print(", ".join(summary(fuzz.messages)))
    run_and_check(
        servers,
        influx=influx,
        root=topic_root,
        tmp_path=tmp_path,
        registry_path=path,
        registry=registry,
        fuzz=fuzz,
    )


def run_and_check(
    servers: LocalServers,
    *,
    influx: InfluxConfig,
    root: str,
    tmp_path: Path,
    registry_path: Path,
    registry: Registry,
    fuzz: FuzzSet,
) -> None:
    messages = fuzz.messages
    env = ingest_env(
        servers,
        influx,
        root,
        tmp_path,
        name="fuzz",
        CITYSENSE_REGISTRY=str(registry_path),
        **INGEST_ENV,
    )
    ingest = IngestProcess(env, tmp_path / "ingest.log")
    ingest.start()
    started = time.monotonic()
    # Wildcards and bytes that are not UTF-8 text in a topic: the broker refuses them itself,
    # so they never reach ingest (the exact counts below would show one that did).
    url = MqttUrl.parse(servers.mosquitto.url("citysense-simulator"))
    for level in FORBIDDEN_LEVELS:
        topic = f"{root}/streetlight/".encode() + level + b"/telemetry"
        answer = raw_publish(url.host, url.port, url.username or "", url.password or "", topic)
        assert answer != "puback", f"the broker took a publish on {topic!r}"

    since_ns = time.time_ns()
    publish(servers.mosquitto.url("citysense-simulator"), [(m.topic, m.payload) for m in messages])
    wait_for(
        lambda: ingest.metric("messages_acked_total") >= len(messages),
        60,
        0.25,
        f"ingest to store and acknowledge {len(messages)} messages",
    )
    until_ns = time.time_ns()
    print(f"published and ingested in {time.monotonic() - started:.1f}s")
    # A stray message the broker took would have reached ingest before the last of these (it
    # was sent first): once everything ingest received is acknowledged, it is counted below.
    wait_for(
        lambda: (
            ingest.metric("unacked_messages") == 0
            and ingest.metric("received_total") == ingest.metric("messages_acked_total")
        ),
        30,
        0.25,
        "ingest to acknowledge all it received",
    )
    assert ingest.metric("received_total") == len(messages)
    assert ingest.metric("messages_acked_total") == len(messages)
    assert ingest.ready(), "ingest is no longer ready"  # and still running (ready() asserts it)

    check_letters(influx, fuzz)
    check_readings(influx, fuzz, registry, since_ns, until_ns)
    check_schema(influx, registry)
    assert ingest.terminate() == 0
    assert "Traceback" not in ingest.log.read_text()


def check_readings(
    influx: InfluxConfig, fuzz: FuzzSet, registry: Registry, since_ns: int, until_ns: int
) -> None:
    """Every valid reading stored, value for value, and nothing else."""
    expected = {(s.measurement, s.device_id, s.time_ns): s.values for s in fuzz.stored}
    stamped = Counter(
        (s.measurement, s.device_id, orjson.dumps(s.values, option=orjson.OPT_SORT_KEYS))
        for s in fuzz.stored
        if s.time_ns is None
    )
    got: dict[tuple[str, str, int | None], dict[str, object]] = {}
    got_stamped: Counter[tuple[str, str, bytes]] = Counter()
    for profile in PROFILES:
        for row in rows(influx, f'SELECT * FROM "{profile}"'):
            device_id, time_ns = str(row["device_id"]), int(str(row["time"]))
            assert device_id in registry.devices, f"a point for unregistered {device_id!r}"
            assert row["district"] == registry.devices[device_id].district, row
            values = {k: v for k, v in row.items() if k not in TAGS and v is not None}
            if (profile, device_id, time_ns) in expected:
                got[(profile, device_id, time_ns)] = values
            else:
                # A reading without a timestamp is stored at the time ingest received it.
                assert since_ns <= time_ns <= until_ns, (profile, device_id, time_ns, values)
                sorted_values = orjson.dumps(values, option=orjson.OPT_SORT_KEYS)
                got_stamped[(profile, device_id, sorted_values)] += 1
    timed = {k: v for k, v in expected.items() if k[2] is not None}
    missing = timed.keys() - got.keys()
    assert not missing, f"{len(missing)} valid readings not stored, e.g. {sorted(missing)[:5]}"
    wrong = {k: (got[k], v) for k, v in timed.items() if got[k] != v}
    assert not wrong, (
        f"{len(wrong)} readings stored with other values, e.g. {list(wrong.items())[:3]}"
    )
    assert got_stamped == stamped
    per_measurement = Counter(s.measurement for s in fuzz.stored)
    print("stored:", dict(sorted(per_measurement.items())))


def stored_payload(row: dict[str, object]) -> bytes:
    text = str(row["payload"])
    if row["payload_encoding"] == "base64":
        return base64.b64decode(text)
    return str(orjson.loads(text)).encode("utf-8")


def check_letters(influx: InfluxConfig, fuzz: FuzzSet) -> None:
    """Every bad message (or bad reading of an array) is one dead letter: its reason, topic,
    profile, device and payload (bounded), exactly as many as were sent."""
    letters = rows(influx, "SELECT * FROM dead_letters.dead_letters")
    want_reasons = Counter(letter.reason for letter in fuzz.letters)
    got_reasons = Counter(str(row["reason"]) for row in letters)

    want: Counter[LetterKey] = Counter()
    kind_of: dict[LetterKey, str] = {}
    for message in fuzz.messages:
        for letter in message.letters:
            key = (
                letter.reason,
                letter.profile,
                letter.device_id,
                message.topic,
                len(letter.payload),
                letter.payload[:DEAD_LETTER_MAX_PAYLOAD],
            )
            want[key] += 1
            kind_of[key] = message.kind
    got: Counter[LetterKey] = Counter()
    detail: dict[LetterKey, str] = {}
    for row in letters:
        key = (
            str(row["reason"]),
            str(row["profile"]),
            str(row["device_id"]),
            str(row["topic"]),
            int(str(row["payload_bytes"])),
            stored_payload(row),
        )
        got[key] += 1
        detail[key] = str(row["detail"])
        assert row["truncated"] == (key[4] > DEAD_LETTER_MAX_PAYLOAD), row["detail"]

    missing, extra = want - got, got - want
    report = [f"dead letters by reason: expected {sorted(want_reasons.items())}"]
    report.append(f"got {sorted(got_reasons.items())}")
    for key in list(missing)[:10]:
        report.append(f"  missing {key[0]} for {kind_of[key]}: {key[3][:80]!r} {key[5][:100]!r}")
    for key in list(extra)[:10]:
        report.append(f"  extra {key[0]} ({detail[key][:100]}): {key[3][:80]!r} {key[5][:100]!r}")
    wrong_kinds = Counter(kind_of[key] for key in missing.elements())
    report.append(f"kinds with a missing or other dead letter: {sorted(wrong_kinds.items())}")
    exact = not missing and not extra
    assert exact, "\n".join(report)
    assert got_reasons == want_reasons
    print("dead letters:", dict(sorted(got_reasons.items())))


def check_schema(influx: InfluxConfig, registry: Registry) -> None:
    """Only the contract's measurements, tags and fields, with the contract's types."""
    measurements = {str(r["name"]) for r in rows(influx, "SHOW MEASUREMENTS")}
    # The point saying the latest rows are whole: ingest set the database up while it was empty;
    # the owed mark of the tests' set-up, which says its readings come from elsewhere
    # (tests.support.influx.make_database, common.schema.withdraw_rows_whole).
    latest = {"citysense_latest", "citysense_latest_complete", "citysense_latest_owed"}
    assert measurements == {*PROFILES, "dead_letters", "citysense_changes", *latest}
    for name, profile in PROFILES.items():
        tag_keys = {str(r["tagKey"]) for r in rows(influx, f'SHOW TAG KEYS FROM "{name}"')}
        assert tag_keys == {"device_id", "district"}, name
        fields = {
            str(r["fieldKey"]): str(r["fieldType"])
            for r in rows(influx, f'SHOW FIELD KEYS FROM "{name}"')
        }
        allowed = {f: FIELD_TYPES[spec.type] for f, spec in profile.fields.items()}
        assert fields.keys() <= allowed.keys(), (name, fields.keys() - allowed.keys())
        assert fields == {f: allowed[f] for f in fields}, name
        ids = {
            str(r["value"])
            for r in rows(influx, f'SHOW TAG VALUES FROM "{name}" WITH KEY = "device_id"')
        }
        assert ids <= {d.device_id for d in registry.of(name)}, name
        series = rows(influx, f'SHOW SERIES FROM "{name}"')
        assert len(series) == len(ids), name  # one series per device: no tag was added
    tag_keys = {str(r["tagKey"]) for r in rows(influx, 'SHOW TAG KEYS FROM "dead_letters"')}
    assert tag_keys == {"reason", "profile", "worker"}
    workers = {
        str(r["value"])
        for r in rows(influx, 'SHOW TAG VALUES FROM "dead_letters" WITH KEY = "worker"')
    }
    assert len(workers) == 1 and workers.pop().startswith("fuzz-")  # the one worker's client id
    reasons = {
        str(r["value"])
        for r in rows(influx, 'SHOW TAG VALUES FROM "dead_letters" WITH KEY = "reason"')
    }
    assert reasons <= REASONS | {"internal_error"}
    profiles = {
        str(r["value"])
        for r in rows(influx, 'SHOW TAG VALUES FROM "dead_letters" WITH KEY = "profile"')
    }
    assert profiles <= {*PROFILES, UNKNOWN}
    fields = {
        str(r["fieldKey"]): str(r["fieldType"])
        for r in rows(influx, 'SHOW FIELD KEYS FROM "dead_letters"."dead_letters"')
    }
    assert fields == DEAD_LETTER_FIELDS
