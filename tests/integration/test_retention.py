"""Retention as configured: ingest sets up the policies at start, each class of data lands in its
own, and a reading older than its policy is gone from the real InfluxDB."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from citysense.servers import LocalServers
from common.influx import InfluxConfig
from ingest.settings import IngestSettings
from tests.support.influx import rows
from tests.support.ingest import ingest_settings, running_worker
from tests.support.mqtt import publish
from tests.support.polling import wait_for
from tests.support.servers import ACL_ROOT
from wire.topics import TopicLayout

pytestmark = pytest.mark.integration

DEVICE = "SL-000001"  # a streetlight of the shipped sample registry
MINUTE_MS = 60_000


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalServers]:
    """Servers whose InfluxDB drops expired data every second instead of every 30 minutes."""
    servers = LocalServers.create(tmp_path / "servers", root=ACL_ROOT)
    servers.influxdb.retention_check = "1s"
    servers.start()
    yield servers
    servers.stop()


def policies(influx: InfluxConfig) -> dict[str, tuple[str, bool]]:
    found = rows(influx, f'SHOW RETENTION POLICIES ON "{influx.database}"')
    return {str(r["name"]): (str(r["duration"]), bool(r["default"])) for r in found}


def lamp(ts_ms: int, power: float) -> bytes:
    return orjson.dumps({"ts": ts_ms, "powerState": "on", "powerConsumption": power})


def test_policies_at_start_and_an_expired_reading_is_gone(
    stack: LocalServers, topic_root: str
) -> None:
    influx = InfluxConfig(url=stack.influxdb.url, database=f"t_{secrets.token_hex(6)}")
    layout = TopicLayout(topic_root)
    now_ms = int(time.time() * 1000)
    publisher = stack.mosquitto.url("citysense-simulator")
    settings = ingest_settings(stack, influx, topic_root, retention_readings="3h")
    with running_worker(settings):
        assert policies(influx) == {
            "autogen": ("0s", False),
            "readings": ("3h0m0s", True),
            "dead_letters": ("2160h0m0s", False),
            "changes": ("960h0m0s", False),
            "alarms": ("9600h0m0s", False),
            "long_term": ("0s", False),
            "aggregates": ("3h0m0s", False),
            "latest": ("0s", False),  # each device's newest reading as a row (wire.latest)
        }
        cqs = {str(r["name"]) for r in rows(influx, "SHOW CONTINUOUS QUERIES")}
        for profile in ("streetlight", "water_pipe"):
            assert f"rollup_{profile}_000" in cqs and f"rollup_{profile}_rest" in cqs
            assert len([n for n in cqs if n.startswith(f"rollup_{profile}_")]) == 26
        old, new = now_ms - 170 * MINUTE_MS, now_ms
        topic = layout.telemetry("streetlight", DEVICE)
        # Older than the readings' policy when it arrives (yet within the profile's max_age):
        # InfluxDB refuses it, and it is kept as a dead letter, not dropped in silence.
        too_old = now_ms - 300 * MINUTE_MS
        messages = [(topic, lamp(old, 10.0)), (topic, lamp(new, 20.0)), (topic, b"{")]
        publish(publisher, [*messages, (topic, lamp(too_old, 5.0))])
        query = "SELECT powerConsumption FROM streetlight"
        wait_for(lambda: len(rows(influx, query)) == 2, 20, what="both readings stored")
        letters = "SELECT * FROM dead_letters.dead_letters"
        wait_for(lambda: len(rows(influx, letters)) == 2, 20, what="dead letters, in their policy")
        reasons = sorted(str(r["reason"]) for r in rows(influx, letters))
        assert reasons == ["invalid_json", "write_rejected"]
    # Nothing but readings in the readings policy.
    assert rows(influx, "SELECT * FROM readings.dead_letters") == []
    # The operator shortens the readings' retention; ingest applies it at its next start.
    with running_worker(ingest_settings(stack, influx, topic_root, retention_readings="1h")):
        assert policies(influx)["readings"] == ("1h0m0s", True)
        wait_for(lambda: len(rows(influx, query)) == 1, 20, what="the expired reading dropped")
    assert [r["powerConsumption"] for r in rows(influx, query)] == [20.0]
    assert len(rows(influx, letters)) == 2  # other classes keep their own time


def test_a_bad_retention_setting_is_refused_with_its_name() -> None:
    with pytest.raises(ValidationError, match="retention_readings"):
        IngestSettings(_env_file=None, retention_readings="ten days")  # type: ignore[call-arg]
