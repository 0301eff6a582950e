"""A field no profile declares, through the real broker and InfluxDB: the reading is stored, the
field is counted and shown to operators, not dropped without a trace (issue 10, 9)."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from citysense.servers import LocalServers, free_port
from common.influx import InfluxConfig
from tests.support.influx import count, rows
from tests.support.ingest import ingest_settings, running_worker
from tests.support.mqtt import publish
from tests.support.polling import wait_for
from wire.topics import TopicLayout

pytestmark = pytest.mark.integration


def test_an_unknown_field_is_reported_and_its_reading_stored(
    servers: LocalServers, influx: InfluxConfig, topic_root: str
) -> None:
    port = free_port()
    settings = ingest_settings(servers, influx, topic_root, http_port=port)
    topic = TopicLayout(topic_root).telemetry("streetlight", "SL-000001")
    ts = time.time_ns() // 1_000_000
    payload = {"ts": ts, "PWNED": 5.0, "powerConsumption": 3.0, "powerState": "on"}
    with running_worker(settings):
        publish(servers.mosquitto.url("citysense-simulator"), [(topic, orjson.dumps(payload))])
        wait_for(lambda: count(influx, "streetlight") == 1, 30, what="the reading stored")
        base = f"http://127.0.0.1:{port}"
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
        sightings = httpx.get(f"{base}/unknown-fields", timeout=5).json()
    [row] = rows(influx, 'SELECT * FROM "streetlight"')
    assert row["powerConsumption"] == 3.0
    assert "PWNED" not in row
    assert (
        'citysense_ingest_unknown_fields_total{field="PWNED",profile="streetlight"} 1.0' in metrics
    )
    [seen] = sightings
    assert (seen["field"], seen["device_id"], seen["sample"], seen["count"]) == (
        "PWNED",
        "SL-000001",
        "5.0",
        1,
    )
    assert count(influx, "dead_letters") == 0
