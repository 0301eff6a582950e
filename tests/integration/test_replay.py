"""A profile fix plus `citysense replay` recovers readings dead-lettered before the fix."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr

from citysense.servers import LocalServers
from common.influx import InfluxConfig
from device_profiles import DEFAULT_PROFILES
from ingest.settings import IngestSettings
from ingest.worker import Worker
from tests.support.influx import count, rows
from tests.support.mqtt import publish
from tests.support.polling import wait_for
from tests.support.replay import replay
from wire.topics import TopicLayout

pytestmark = pytest.mark.integration


def test_profile_fix_and_replay_recover_without_duplicates(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, tmp_path: Path
) -> None:
    # A profile too strict for a new pipe: pressure above 1000 kPa is refused.
    profiles = tmp_path / "profiles"
    shutil.copytree(DEFAULT_PROFILES, profiles)
    pipe = profiles / "water_pipe.yaml"
    original = pipe.read_text()
    pipe.write_text(
        original.replace("range: [0, 2500], required: true", "range: [0, 1000], required: true")
    )
    settings = IngestSettings(
        mqtt_url=SecretStr(servers.mosquitto.url("citysense-ingest")),
        influx_url=influx.url,
        influx_db=influx.database,
        topic_root=topic_root,
        profiles=profiles,
        http_port=0,
        client_id=f"replay-{topic_root[-8:]}",
        flush_interval=0.05,
        spool_dir=None,
    )
    contract = settings.load_contract()
    worker = Worker(settings, *contract)
    worker.start()
    layout = TopicLayout(topic_root)
    t = time.time_ns() // 1_000_000 - 600_000
    high = [
        (
            layout.telemetry("water_pipe", "WP-000007"),
            orjson.dumps({"ts": t + i * 1000, "pressure": 1200.0 + i}),
        )
        for i in range(20)
    ]
    array = (
        layout.telemetry("water_pipe", "WP-000008"),  # one good, one too high
        orjson.dumps([{"ts": t, "pressure": 400.0}, {"ts": t + 1000, "pressure": 1500.0}]),
    )
    garbage = (layout.telemetry("water_pipe", "WP-000008"), b"{oops")
    try:
        wait_for(worker.consumer.subscribed.is_set, 10, what="subscription")
        publish(servers.mosquitto.url("citysense-simulator"), [*high, array, garbage])
        wait_for(lambda: worker.stats.messages_acked == 22, 10, what="acks")
    finally:
        worker.stop()
    assert count(influx, "water_pipe") == 1
    assert count(influx, "dead_letters") == 22

    pipe.write_text(original)  # the fix: the profile's real range
    env = {
        **os.environ,
        "CITYSENSE_INFLUX_URL": influx.url,
        "CITYSENSE_INFLUX_DB": influx.database,
        "CITYSENSE_TOPIC_ROOT": topic_root,
        "CITYSENSE_PROFILES": str(profiles),
    }
    first = replay(env, "--reason", "out_of_range")
    assert first == {
        "replayed": 21,
        "results": {"stored": 21},
        "dry_run": False,
        "owed_marks_lost": 0,
        "marks_refused": 0,
    }
    # Replay announces nothing: its marks are quiet (wire.changes), so that a later announced
    # write into the window cannot hide it from the API.
    marks = rows(influx, "SELECT stamp, quiet FROM changes.citysense_changes")
    assert marks and all(m["quiet"] == m["stamp"] for m in marks)
    stored = rows(influx, 'SELECT pressure, device_id FROM "water_pipe"')
    assert len(stored) == 22
    assert sorted(r["pressure"] for r in stored if r["device_id"] == "WP-000007") == [
        1200.0 + i for i in range(20)
    ]

    # Replaying again finds nothing left; replaying everything again stores nothing twice.
    assert replay(env, "--reason", "out_of_range")["replayed"] == 0
    again = replay(env, "--again")
    assert again["results"] == {"stored": 21, "still rejected": 1}
    assert count(influx, "water_pipe") == 22
    assert count(influx, "dead_letters") == 22  # marked, never copied
    letters = rows(influx, "SELECT reason, replay_result FROM dead_letters.dead_letters")
    assert sorted(str(r["replay_result"]) for r in letters) == sorted(
        ["stored"] * 21 + ["still rejected: invalid_json"]
    )
