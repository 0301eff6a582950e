"""GET /health against the real broker and InfluxDB, and what data routes answer when InfluxDB
cannot be reached."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.main import create_app
from citysense.servers import LocalServers, free_port
from common.influx import InfluxConfig
from common.mqtturl import MqttUrl
from tests.support.api import api_settings, running

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

REGISTRY = """device_id,profile,district,latitude,longitude,address
SL-1,streetlight,North,30.1,120.1,1 Lamp Rd
"""
# Health probes give up after this many seconds (3 by default).
HEALTH_TIMEOUT = 2.0


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def with_password(url: str, password: str) -> str:
    parsed = MqttUrl.parse(url)
    return f"mqtt://{parsed.username}:{password}@{parsed.host}:{parsed.port}"


async def test_healthy(servers: LocalServers, influx: InfluxConfig, tmp_path: Path) -> None:
    settings = api_settings(
        servers, influx, tmp_path, registry=REGISTRY, api_health_timeout=HEALTH_TIMEOUT
    )
    async with running(create_app(settings)) as api:
        response = await api.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "influxdb": {"status": "up", "detail": None},
        "mqtt": {"status": "up", "detail": None},
        "background": {"status": "up", "detail": None},
    }


async def test_influx_unreachable(servers: LocalServers, tmp_path: Path) -> None:
    settings = api_settings(
        servers,
        InfluxConfig(url=closed_port_url(), database="citysense"),
        tmp_path,
        registry=REGISTRY,
        api_health_timeout=HEALTH_TIMEOUT,
    )
    async with running(create_app(settings)) as api:
        response = await api.get("/health")
        data = await api.get("/devices/SL-1")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["influxdb"]["status"] == "down"
    assert body["mqtt"] == {"status": "up", "detail": None}
    # a data route says plainly that the database is the problem, and that retrying makes sense
    assert data.status_code == 503
    assert data.json()["detail"].startswith("InfluxDB is unavailable, retry later")
    assert "ConnectError" in data.json()["detail"]


async def test_wrong_mqtt_password(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path
) -> None:
    wrong = "wrong-password-do-not-print"
    settings = api_settings(
        with_password(servers.mosquitto.url("citysense-api"), wrong),
        influx,
        tmp_path,
        registry=REGISTRY,
        api_health_timeout=HEALTH_TIMEOUT,
    )
    async with running(create_app(settings)) as api:
        response = await api.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["influxdb"]["status"] == "up"
    assert body["mqtt"]["status"] == "down"
    assert "refused" in body["mqtt"]["detail"]
    assert "Not authorized" in body["mqtt"]["detail"]
    assert wrong not in response.text


async def test_broker_unreachable(influx: InfluxConfig, tmp_path: Path) -> None:
    settings = api_settings(
        f"mqtt://citysense-api:secret-pw@127.0.0.1:{free_port()}",
        influx,
        tmp_path,
        registry=REGISTRY,
        api_health_timeout=HEALTH_TIMEOUT,
    )
    async with running(create_app(settings)) as api:
        response = await api.get("/health")
    assert response.status_code == 503
    assert response.json()["mqtt"]["status"] == "down"
    assert "cannot connect" in response.json()["mqtt"]["detail"]
    assert "secret-pw" not in response.text


async def test_influx_credentials_never_leak(servers: LocalServers, tmp_path: Path) -> None:
    password, token = "influx-url-password", "influx-token-value"
    settings = api_settings(
        servers,
        InfluxConfig(
            url=closed_port_url().replace("http://", f"http://reader:{password}@"),
            database="citysense",
            token=token,
        ),
        tmp_path,
        registry=REGISTRY,
        api_health_timeout=HEALTH_TIMEOUT,
    )
    async with running(create_app(settings)) as api:
        responses = [await api.get(path) for path in ("/health", "/devices/SL-1")]
    for response in responses:
        assert response.status_code == 503
        assert password not in response.text
        assert token not in response.text
