"""The simulator's expectations against the real ingest: what a SimMessage says will be stored is
stored, value for value, and what it says will be rejected is dead-lettered with that reason."""

from __future__ import annotations

from collections import Counter

import pytest
from pydantic import SecretStr

from citysense.servers import LocalServers
from common.influx import InfluxConfig
from common.mqtturl import MqttUrl
from ingest.settings import IngestSettings
from ingest.worker import Worker
from simulators.fleet import generate
from simulators.publish import publish
from tests.support.influx import rows
from tests.support.polling import wait_for
from wire.topics import TopicLayout

pytestmark = pytest.mark.integration

TAGS = ("time", "device_id", "district")


def test_ingest_stores_and_rejects_exactly_what_the_simulator_expects(
    servers: LocalServers, influx: InfluxConfig, topic_root: str
) -> None:
    settings = IngestSettings(
        mqtt_url=SecretStr(servers.mosquitto.url("citysense-ingest")),
        influx_url=influx.url,
        influx_db=influx.database,
        topic_root=topic_root,
        client_id=f"ingest-{topic_root.replace('/', '-')}",
        http_port=0,
        flush_interval=0.05,
        spool_dir=None,
    )
    profiles, registry = settings.load_contract()
    worker = Worker(settings, profiles, registry)
    worker.start()
    try:
        wait_for(worker.consumer.subscribed.is_set, 10, what="subscription")
        messages = list(
            generate(list(registry.devices.values())[::20], profiles, TopicLayout(topic_root),
                     readings_per_device=8, array_ratio=0.3, fault_ratio=0.15, seed=5)
        )  # fmt: skip
        assert {m.fault for m in messages} == {
            None, "malformed_json", "wrong_type", "out_of_range", "duplicate",
        }  # fmt: skip
        publish(MqttUrl.parse(servers.mosquitto.url("citysense-simulator")), messages)
        wait_for(lambda: worker.stats.messages_acked >= len(messages), 30, what="every ack")
    finally:
        worker.stop()

    expected = {(r.device_id, r.time_ns): r.values for m in messages for r in m.readings}
    stored = {
        (row["device_id"], row["time"]): {
            k: v for k, v in row.items() if k not in TAGS and v is not None
        }
        for profile in profiles
        for row in rows(influx, f'SELECT * FROM "{profile}"')
    }
    assert stored == expected
    letters = rows(influx, "SELECT * FROM dead_letters.dead_letters")
    assert Counter(row["reason"] for row in letters) == Counter(
        reason for m in messages for reason in m.rejections
    )
