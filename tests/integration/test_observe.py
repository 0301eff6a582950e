"""Ingest as an operator watches it (README, "Operating it"): /ready turns false while InfluxDB
is unreachable and true once it is back, and /metrics counts what happened, in a normal run and
through an outage, against what was published and what InfluxDB holds. (The spool's metrics are
checked in the fault suite's SIGKILL-with-a-spool scenario, `acks_voided` in its stale-save
scenario, `thread_crashes` in test_delivery.)"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from citysense.servers import LocalServers
from tests.support.faults import PIPES
from tests.support.influx import count, make_database, rows
from tests.support.mqtt import publish
from tests.support.polling import wait_for
from tests.support.processes import IngestProcess, ingest_env
from wire.topics import TopicLayout

pytestmark = pytest.mark.integration


def test_ready_follows_influxdb_and_the_metrics_add_up(
    private_servers: LocalServers, topic_root: str, tmp_path: Path
) -> None:
    stack = private_servers
    influx = make_database(stack)
    ingest = IngestProcess(
        ingest_env(stack, influx, topic_root, tmp_path, CITYSENSE_SPOOL_DIR=""),
        tmp_path / "i.log",
    )
    ingest.start()
    assert ingest.status("/ready") == 200 and ingest.status("/live") == 200
    layout = TopicLayout(topic_root)
    t = time.time_ns() // 1_000_000 - 600_000
    light = layout.telemetry("streetlight", "SL-000001")

    def pipe(n: int) -> tuple[str, bytes]:
        reading = {"ts": t + n * 1000, "pressure": 200.0 + n}
        return layout.telemetry("water_pipe", PIPES[n % len(PIPES)]), orjson.dumps(reading)

    good = [pipe(n) for n in range(20)]
    bad = {
        ("streetlight", "out_of_range"): [
            (light, orjson.dumps({"ts": t + n, "powerState": "on", "voltage": 9000}))
            for n in (1, 2)
        ],
        ("water_pipe", "invalid_json"): [
            (layout.telemetry("water_pipe", PIPES[0]), b'{"pressure": ')
        ],
        # Filed under `unknown`: the registry does not know the device (its topic says water).
        ("unknown", "unknown_device"): [
            (layout.telemetry("water_pipe", "WP-NOT-REGISTERED"), orjson.dumps({"pressure": 1}))
        ],
    }
    messages = good + [m for ms in bad.values() for m in ms]
    url = stack.mosquitto.url("citysense-simulator")
    publish(url, messages)
    wait_for(lambda: ingest.metric("messages_acked_total") == len(messages), 30, what="every ack")
    m = ingest.metrics()
    assert m["received_total"] == len(messages)
    assert m["readings_stored_total"] == len(good) == count(influx, "water_pipe")
    assert m["dead_letters_stored_total"] == len(messages) - len(good)
    assert m["batches_written_total"] >= 1 and m["write_latency_seconds_count"] >= 1
    rejected = {k: v for k, v in m.items() if k.startswith("rejected_total{")}
    expected = {
        f'rejected_total{{profile="{p}",reason="{r}"}}': len(ms) for (p, r), ms in bad.items()
    }
    assert rejected == expected
    letters = rows(influx, "SELECT reason, profile, detail FROM dead_letters.dead_letters")
    assert Counter((r["profile"], r["reason"]) for r in letters) == {
        key: len(ms) for key, ms in bad.items()
    }
    for name in (
        "write_retries_total",
        "unacked_messages",
        "held_bytes",
        "buffered_lines",
        "acks_voided",
        "thread_crashes_total",
        "spilled_batches_total",
        "unspooled_batches_total",
        "budget_waits",
    ):
        assert m[name] == 0, name
    assert m["ready"] == 1

    stack.influxdb.stop()
    wait_for(lambda: ingest.status("/ready") == 503, 30, what="/ready to turn false")
    assert ingest.status("/live") == 200  # alive, only not ready
    later = [pipe(n) for n in range(20, 30)]
    publish(url, later)
    wait_for(
        lambda: ingest.metric("unacked_messages") == len(later), 30, what="ingest holding them"
    )
    wait_for(lambda: ingest.metric("write_retries_total") >= 2, 30, what="the writer retrying")
    m = ingest.metrics()
    assert m["received_total"] == len(messages) + len(later)
    assert m["messages_acked_total"] == len(messages)  # nothing acknowledged while down
    assert m["readings_stored_total"] == len(good)
    assert m["held_bytes"] > 0 and m["oldest_unacked_seconds"] > 0

    stack.influxdb.start()
    wait_for(lambda: ingest.status("/ready") == 200, 30, what="/ready to turn true again")
    total = len(messages) + len(later)
    wait_for(lambda: ingest.metric("messages_acked_total") == total, 30, what="every ack")
    m = ingest.metrics()
    assert m["readings_stored_total"] == len(good) + len(later) == count(influx, "water_pipe")
    assert m["unacked_messages"] == 0 and m["held_bytes"] == 0
    assert m["thread_crashes_total"] == 0 and m["ready"] == 1
    assert ingest.terminate() == 0
