"""GET /health against the real broker and InfluxDB, and what data routes answer when InfluxDB
cannot be reached."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from api.core.settings import ApiSettings
from api.main import create_app
from citysense.servers import LocalServers, free_port
from common.influx import InfluxConfig
from common.mqtturl import MqttUrl
from device_profiles import DEFAULT_PROFILES

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

REGISTRY = """device_id,profile,district,latitude,longitude,address
SL-1,streetlight,North,30.1,120.1,1 Lamp Rd
"""


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api.test") as client,
    ):
        yield client


def settings_for(tmp_path: Path, *, mqtt_url: str, influx_url: str, database: str) -> ApiSettings:
    registry = tmp_path / "registry.csv"
    registry.write_text(REGISTRY)
    return ApiSettings(
        _env_file=None,
        mqtt_url=SecretStr(mqtt_url),
        influx_url=influx_url,
        influx_db=database,
        profiles=DEFAULT_PROFILES,
        registry=registry,
        api_health_timeout=2.0,
        api_auth="off",  # access rights have their own tests
    )


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def with_password(url: str, password: str) -> str:
    parsed = MqttUrl.parse(url)
    return f"mqtt://{parsed.username}:{password}@{parsed.host}:{parsed.port}"


async def test_healthy(servers: LocalServers, influx: InfluxConfig, tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path,
        mqtt_url=servers.mosquitto.url("citysense-api"),
        influx_url=influx.url,
        database=influx.database,
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
    settings = settings_for(
        tmp_path,
        mqtt_url=servers.mosquitto.url("citysense-api"),
        influx_url=closed_port_url(),
        database="citysense",
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
    settings = settings_for(
        tmp_path,
        mqtt_url=with_password(servers.mosquitto.url("citysense-api"), wrong),
        influx_url=influx.url,
        database=influx.database,
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
    settings = settings_for(
        tmp_path,
        mqtt_url=f"mqtt://citysense-api:secret-pw@127.0.0.1:{free_port()}",
        influx_url=influx.url,
        database=influx.database,
    )
    async with running(create_app(settings)) as api:
        response = await api.get("/health")
    assert response.status_code == 503
    assert response.json()["mqtt"]["status"] == "down"
    assert "cannot connect" in response.json()["mqtt"]["detail"]
    assert "secret-pw" not in response.text


async def test_influx_credentials_never_leak(servers: LocalServers, tmp_path: Path) -> None:
    password, token = "influx-url-password", "influx-token-value"
    settings = settings_for(
        tmp_path,
        mqtt_url=servers.mosquitto.url("citysense-api"),
        influx_url=closed_port_url().replace("http://", f"http://reader:{password}@"),
        database="citysense",
    ).model_copy(update={"influx_token": SecretStr(token)})
    async with running(create_app(settings)) as api:
        responses = [await api.get(path) for path in ("/health", "/devices/SL-1")]
    for response in responses:
        assert response.status_code == 503
        assert password not in response.text
        assert token not in response.text
