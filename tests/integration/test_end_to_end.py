"""The whole path once: a simulated city through the real broker, ingest, InfluxDB and the API.

Expectations are computed here, from what the simulator says it published — never from the code
under test: every valid reading stored with its values, every bad message recorded with its
reason, the API's latest values and district figures right.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from api.core.settings import ApiSettings
from api.main import create_app
from citysense.servers import LocalServers
from common.influx import InfluxConfig
from common.mqtturl import MqttUrl
from device_profiles import DEFAULT_REGISTRY, load_profiles, load_registry
from ingest.settings import IngestSettings
from ingest.worker import Worker
from simulators.fleet import ExpectedReading, SimMessage, generate
from simulators.publish import publish
from tests.support.api import running
from tests.support.influx import count, rows
from tests.support.polling import wait_for
from wire.topics import TopicLayout

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

PROFILES = load_profiles()
REGISTRY = load_registry(DEFAULT_REGISTRY, PROFILES)
DEVICES = 1200
READINGS_PER_DEVICE = 20


def fleet(root: str) -> list[SimMessage]:
    # Every profile represented: take devices round-robin over the three profiles.
    by_profile = [REGISTRY.of(profile=p) for p in sorted(PROFILES)]
    devices = [group[i] for i in range(DEVICES // 3) for group in by_profile]
    return list(
        generate(
            devices,
            PROFILES,
            TopicLayout(root),
            readings_per_device=READINGS_PER_DEVICE,
            array_ratio=0.15,
            max_array=5,
            fault_ratio=0.05,
            seed=2026,
        )
    )


@pytest.fixture
def worker(servers: LocalServers, influx: InfluxConfig, topic_root: str) -> Iterator[Worker]:
    settings = IngestSettings(
        mqtt_url=SecretStr(servers.mosquitto.url("citysense-ingest")),
        influx_url=influx.url,
        influx_db=influx.database,
        topic_root=topic_root,
        http_port=0,
        spool_dir=None,
        client_id=f"e2e-{secrets.token_hex(3)}",
    )
    running = Worker(settings, *settings.load_contract())
    running.start()
    wait_for(running.consumer.subscribed.is_set, 10, what="subscription")
    yield running
    running.stop()


def latest_by_device(readings: list[ExpectedReading]) -> dict[str, ExpectedReading]:
    latest: dict[str, ExpectedReading] = {}
    for r in readings:
        if r.device_id not in latest or r.time_ns > latest[r.device_id].time_ns:
            latest[r.device_id] = r
    return latest


def expected_figures(
    latest: dict[str, ExpectedReading], district: str
) -> dict[str, dict[str, float | int | None]]:
    """The operator's first figures per profile, written out by hand from DOMAIN.md's needs."""
    mine = [r for r in latest.values() if REGISTRY.devices[r.device_id].district == district]

    def values(profile: str, field: str) -> list[Any]:
        return [r.values[field] for r in mine if r.profile == profile and field in r.values]

    pressure = values("water_pipe", "pressure")
    return {
        "streetlight": {
            "lamps_on": sum(1 for v in values("streetlight", "powerState") if v == "on"),
            "total_power_w": sum(values("streetlight", "powerConsumption")),
        },
        "water_pipe": {
            "mean_pressure_kpa": sum(pressure) / len(pressure) if pressure else None,
            "min_pressure_kpa": min(pressure) if pressure else None,
            "total_flow_m3h": sum(values("water_pipe", "flow")),
        },
        "power_meter": {
            "total_active_power_kw": sum(values("power_meter", "activePower")),
            "max_active_power_kw": max(values("power_meter", "activePower"), default=None),
        },
    }


async def test_simulated_city_end_to_end(
    worker: Worker, servers: LocalServers, influx: InfluxConfig, topic_root: str
) -> None:
    messages = fleet(topic_root)
    readings = [r for m in messages for r in m.readings]
    rejections = Counter(reason for m in messages for reason in m.rejections)
    assert len({r.device_id for r in readings}) >= 1000
    assert len(readings) >= 20_000
    assert sum(1 for m in messages if m.payload.startswith(b"[")) > 500  # array messages
    assert {m.fault for m in messages} >= {
        "malformed_json",
        "wrong_type",
        "out_of_range",
        "duplicate",
    }

    report = publish(MqttUrl.parse(servers.mosquitto.url("citysense-simulator")), messages)
    assert report.messages == len(messages)
    total = sum(rejections.values())
    wait_for(lambda: worker.stats.messages_acked == len(messages), 120, 0.5, "all acked")

    # Every valid reading is in InfluxDB with its values, and nothing else is.
    for profile in PROFILES:
        expected = {(r.device_id, r.time_ns): r.values for r in readings if r.profile == profile}
        got = {}
        for row in rows(influx, f'SELECT * FROM "{profile}"'):
            values = {
                k: v
                for k, v in row.items()
                if k not in ("time", "device_id", "district") and v is not None
            }
            got[(str(row["device_id"]), int(str(row["time"])))] = values
        assert got.keys() == expected.keys(), profile
        for key, values in expected.items():
            assert got[key] == pytest.approx(values), key

    # Every bad message is recorded with its reason, exactly as many as were sent.
    assert count(influx, "dead_letters") == total
    stored_reasons = Counter(
        str(r["reason"]) for r in rows(influx, "SELECT * FROM dead_letters.dead_letters")
    )
    assert stored_reasons == rejections

    # The API answers from what was stored.
    settings = ApiSettings(
        mqtt_url=SecretStr(servers.mosquitto.url("citysense-api")),
        influx_url=influx.url,
        influx_db=influx.database,
        topic_root=topic_root,
        api_auth="off",
    )
    app = create_app(settings)
    latest = latest_by_device(readings)
    async with running(app) as client:
        for device_id in sorted(latest)[::50]:
            body = (await client.get(f"/devices/{device_id}")).json()
            want = latest[device_id]
            assert body["reading"]["values"] == pytest.approx(want.values), device_id
        for district in REGISTRY.districts:
            response = await client.get(f"/districts/{district}/summary", params={"window": "30d"})
            assert response.status_code == 200, response.text
            figures = {
                p["profile"]: {f["name"]: f["value"] for f in p["figures"]}
                for p in response.json()["profiles"]
            }
            want_figures = expected_figures(latest, district)
            for profile, want in want_figures.items():
                for name, value in want.items():
                    assert figures[profile][name] == pytest.approx(value), (district, name)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
