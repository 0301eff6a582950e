"""A line InfluxDB refused (write_rejected) can be replayed once the operator removed the cause
(issue 10): the refused line is written again, with its change mark, and the letter marked."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import orjson
import pytest

from citysense.servers import LocalServers
from common.influx import InfluxClient, InfluxConfig
from tests.support.influx import count, rows
from tests.support.ingest import ingest_settings, running_worker
from tests.support.mqtt import publish
from tests.support.polling import wait_for
from wire.topics import TopicLayout

pytestmark = pytest.mark.integration


def test_a_refused_line_is_stored_by_replay_after_the_fix(
    servers: LocalServers, influx: InfluxConfig, topic_root: str
) -> None:
    # Old data wrote `pressure` as a string in this shard: InfluxDB refuses our float.
    with InfluxClient(influx) as client:
        client.write(f'water_pipe,device_id=OLD pressure="x" {time.time_ns()}'.encode())
    ts = time.time_ns() // 1_000_000
    topic = TopicLayout(topic_root).telemetry("water_pipe", "WP-000003")
    with running_worker(ingest_settings(servers, influx, topic_root)) as worker:
        publish(
            servers.mosquitto.url("citysense-simulator"),
            [(topic, orjson.dumps({"ts": ts, "pressure": 321.0}))],
        )
        wait_for(lambda: worker.stats.messages_acked == 1, 30, what="the message settled")
    [letter] = rows(influx, "SELECT reason, detail FROM dead_letters.dead_letters")
    assert letter["reason"] == "write_rejected"
    with InfluxClient(influx) as client:  # the operator's fix: the conflicting data goes
        client.query('DROP MEASUREMENT "water_pipe"')
    env = {
        **os.environ,
        "CITYSENSE_INFLUX_URL": influx.url,
        "CITYSENSE_INFLUX_DB": influx.database,
        "CITYSENSE_TOPIC_ROOT": topic_root,
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "citysense.cli",
            "replay",
            "--no-progress",
            "--reason",
            "write_rejected",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert orjson.loads(done.stdout.strip().splitlines()[-1])["results"] == {"stored": 1}
    [reading] = rows(influx, 'SELECT pressure, device_id FROM "water_pipe"')
    assert (reading["device_id"], reading["pressure"]) == ("WP-000003", 321.0)
    [marked] = rows(influx, "SELECT replay_result FROM dead_letters.dead_letters")
    assert marked["replay_result"] == "stored"
    assert count(influx, "citysense_changes") >= 1
