"""Every InfluxDB query of the shipped Grafana dashboards runs against a real InfluxDB holding a
simulated city (stored by ingest, bad messages included) and returns rows (issue 11). Grafana's
macros are replaced as Grafana would: $timeFilter by a time range, $__interval by a width."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from citysense.servers import LocalServers
from common.influx import InfluxClient, InfluxConfig
from common.mqtturl import MqttUrl
from simulators.fleet import generate
from simulators.models import DEFAULT_UTC_OFFSET_HOURS
from simulators.publish import publish
from tests.support.ingest import ingest_settings, running_worker
from tests.support.polling import wait_for
from wire.topics import TopicLayout

pytestmark = pytest.mark.integration

DASHBOARDS = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"


def targets(datasource: str) -> list[tuple[str, str, str]]:
    """(dashboard, panel, query) of every target of `datasource` type in the shipped dashboards."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board: dict[str, Any] = orjson.loads(path.read_bytes())
        for panel in board["panels"]:
            for target in panel["targets"]:
                if target["datasource"]["type"] == datasource:
                    found.append((path.stem, panel["title"], target.get("query") or target["expr"]))
    return found


def last_city_evening_ms() -> int:
    """The most recent 22:00 in the simulated city's zone: lamps are on, pipes and meters busy."""
    now = time.time()
    offset = DEFAULT_UTC_OFFSET_HOURS * 3600
    evening = (now + offset) // 86400 * 86400 + 22 * 3600 - offset
    if evening > now:
        evening -= 86400
    return int(evening * 1000)


def test_the_dashboards_are_the_three_promised() -> None:
    assert sorted(p.stem for p in DASHBOARDS.glob("*.json")) == [
        "city-overview",
        "data-quality",
        "ingest-health",
    ]
    assert len(targets("influxdb")) >= 8


def test_every_influxdb_query_returns_rows(
    servers: LocalServers, influx: InfluxConfig, topic_root: str
) -> None:
    settings = ingest_settings(servers, influx, topic_root)
    profiles, registry = settings.load_contract()
    messages = list(
        generate(list(registry.devices.values())[::10], profiles, TopicLayout(topic_root),
                 readings_per_device=12, array_ratio=0.2, fault_ratio=0.1, seed=11,
                 end_ms=last_city_evening_ms())
    )  # fmt: skip
    with running_worker(settings) as worker:
        publish(MqttUrl.parse(servers.mosquitto.url("citysense-simulator")), messages)
        wait_for(lambda: worker.stats.messages_acked >= len(messages), 60, what="every ack")
    empty = []
    with InfluxClient(influx) as client:
        for board, panel, query in targets("influxdb"):
            text = query.replace("$timeFilter", "time > now() - 2d").replace("$__interval", "15m")
            result = client.query(text)
            values = [v for s in result[0] for row in s.values for v in row[1:] if v is not None]
            if not values:
                empty.append(f"{board} / {panel}: {text}")
    assert empty == []
