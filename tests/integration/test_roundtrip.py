"""Property: whatever a device sends, what lands in InfluxDB is exactly its validated values —
no extra series, tag or field, ever. Generated readings and adversarial strings go through the
real pipeline, into the real InfluxDB, and back."""

from __future__ import annotations

import string
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citysense.servers import LocalServers
from common.influx import InfluxClient, InfluxConfig
from device_profiles import Registry, load_profiles
from ingest.pipeline import Pipeline
from ingest.stages import Received
from ingest.stats import Stats
from tests.support.influx import make_database
from wire.reasons import Reason
from wire.topics import TopicLayout

pytestmark = pytest.mark.integration

PROFILE = """profile: probe
reporting_interval: 1m
fields:
  n: {type: number, range: [-1.0e300, 1.0e300]}
  i: {type: integer, range: [-9223372036854775808, 9223372036854775807]}
  b: {type: boolean}
  s: {type: state, values: ["a", "b b", "c,d", "e=f", 'g"h']}
  t: {type: text, max_length: 200}
"""

METACHARS = ",= \"\\\n\r\t#+/\x00'{}[]"
ADVERSARIAL = st.text(
    alphabet=st.one_of(st.sampled_from(METACHARS), st.characters(blacklist_categories=("Cs",))),
    max_size=40,
)
VALUES = st.fixed_dictionaries(
    {},
    optional={
        "n": st.floats(min_value=-1e300, max_value=1e300, allow_nan=False),
        "i": st.integers(min_value=-(2**63), max_value=2**63 - 1),
        "b": st.booleans(),
        "s": st.sampled_from(["a", "b b", "c,d", "e=f", 'g"h']),
        "t": ADVERSARIAL,
    },
)
DEVICE_IDS = st.one_of(
    ADVERSARIAL.filter(lambda s: "/" not in s and s),
    st.text(alphabet=string.ascii_letters + string.digits + "-_.:", min_size=1, max_size=20),
)


@pytest.fixture(scope="module")
def probe(
    tmp_path_factory: pytest.TempPathFactory, servers: LocalServers
) -> tuple[Pipeline, InfluxConfig]:
    folder: Path = tmp_path_factory.mktemp("probe")
    (folder / "probe.yaml").write_text(PROFILE)
    pipeline = Pipeline(
        load_profiles(folder),
        Registry({}),
        TopicLayout("city"),
        Stats(),
        accept_unknown_devices=True,
        seen=None,
    )
    return pipeline, make_database(servers)


def round_trip(
    probe: tuple[Pipeline, InfluxConfig],
    device_id: str,
    values: dict[str, Any],
    extra_keys: dict[str, int],
) -> None:
    """One reading through the pipeline into InfluxDB and back: stored exactly as validated, or
    rejected for a reason the contract gives."""
    pipeline, config = probe
    ts_ms = time.time_ns() // 1_000_000 - 1000
    payload: dict[str, Any] = {**extra_keys, **values, "ts": ts_ms}
    outcome = pipeline.process(
        Received(f"city/probe/{device_id}/telemetry", orjson.dumps(payload), 1, 1, time.time_ns())
    )
    with InfluxClient(config) as client:
        client.write("\n".join(outcome.lines).encode())
        if outcome.readings == 0:
            assert outcome.rejected, "nothing stored and nothing said why"
            expected_reasons = {
                Reason.BAD_DEVICE_ID,
                Reason.INVALID_VALUE,
                Reason.NO_FIELDS,
                Reason.DUPLICATE,
                Reason.TIMESTAMP_CONFLICT,
            }
            assert {r.reason for r in outcome.rejected} <= expected_reasons
            return
        result = client.query(
            'SELECT * FROM "probe" WHERE device_id = $d AND time = $t',
            {"d": device_id, "t": ts_ms * 1_000_000},
            epoch="ns",
        )
    (series,) = result[0]
    (row,) = series.rows()
    stored = {
        k: v for k, v in row.items() if k not in {"time", "device_id", "district"} and v is not None
    }
    if "n" in stored:
        # InfluxDB's JSON prints a whole float as an integer literal; the double is the same.
        stored["n"] = float(stored["n"])
    expected = {k: float(v) if k == "n" else v for k, v in values.items()}
    assert stored == expected
    assert row["device_id"] == device_id


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    device_id=DEVICE_IDS,
    values=VALUES,
    # Stray keys only: one named like a field ("i") would be that field, not a stray key, and
    # `device_id` names the device (it must match the topic's: test_validate.py). Hypothesis
    # draws the code's own string constants too, so it does draw "device_id".
    extra_keys=st.dictionaries(
        ADVERSARIAL.filter(lambda k: k not in {"n", "i", "b", "s", "t", "ts", "device_id"}),
        st.integers(-1000, 1000),
        max_size=3,
    ),
)
def test_round_trip_through_influxdb(
    probe: tuple[Pipeline, InfluxConfig],
    device_id: str,
    values: dict[str, Any],
    extra_keys: dict[str, int],
) -> None:
    round_trip(probe, device_id, values, extra_keys)


# Readings of every field type, with ids, values and stray keys made of every metacharacter.
EVERY_KIND = [
    ("plain-1", {"n": 1.5, "i": -3, "b": True, "s": "c,d", "t": "x"}, {}),
    (METACHARS.replace("/", "").replace("\x00", ""), {"t": METACHARS}, {METACHARS: 1}),
    ('a"b c,d=e', {"s": 'g"h', "t": "tab\tnewline\n"}, {"ts2": 5, "device_id ": 7}),
    ("x\\y", {"n": -1.0e300, "i": 2**63 - 1, "b": False}, {"#": 1, "{}": 2}),
]


def test_no_extra_series_tags_or_fields(probe: tuple[Pipeline, InfluxConfig]) -> None:
    """The schema holds only what the contract allows, whatever the device ids, values and
    stray payload keys were: the readings written here, and in a whole run of this module also
    everything the property above generated (the database is the module's)."""
    for device_id, values, extra_keys in EVERY_KIND:
        round_trip(probe, device_id, values, extra_keys)
    _, config = probe
    with InfluxClient(config) as client:
        measurements = client.query("SHOW MEASUREMENTS")
        tag_keys = client.query('SHOW TAG KEYS FROM "probe"')
        field_keys = client.query('SHOW FIELD KEYS FROM "probe"')
    names = {row[0] for s in measurements[0] for row in s.values}
    # And the owed mark of the tests' set-up (tests.support.influx.make_database).
    assert names <= {"probe", "dead_letters", "citysense_latest_owed"}
    assert {row[0] for s in tag_keys[0] for row in s.values} == {"device_id", "district"}
    fields = {row[0]: row[1] for s in field_keys[0] for row in s.values}
    assert (
        fields.items()
        <= {"n": "float", "i": "integer", "b": "boolean", "s": "string", "t": "string"}.items()
    )
