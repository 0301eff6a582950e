"""The API under test: its settings, the app running in process with a client that calls it, and
access tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml
from fastapi import FastAPI
from pydantic import SecretStr

from api.core.settings import ApiSettings
from api.core.tokens import hash_token
from citysense.servers import LocalServers
from common.influx import InfluxConfig
from device_profiles import DEFAULT_PROFILES
from tests.support.seeding import write_registry


def api_settings(
    mqtt: LocalServers | str,
    influx: InfluxConfig,
    tmp_path: Path,
    *,
    registry: Path | str | None = None,
    tokens: Path | None = None,
    **update: Any,
) -> ApiSettings:
    """Settings of an API on the broker of `mqtt` (the servers' `citysense-api` user, or an MQTT
    URL) and the database of `influx` (its token too, if it has one), with the repo's profiles.

    `registry`: a registry file, or the text of one (written to tmp_path/registry.csv); by
    default seeding.REGISTRY. Access rights are off (they have their own tests) unless `tokens`
    names a tokens file. Any other ApiSettings field can be set by keyword."""
    mqtt_url = mqtt if isinstance(mqtt, str) else mqtt.mosquitto.url("citysense-api")
    if registry is None:
        registry = write_registry(tmp_path / "registry.csv")
    elif isinstance(registry, str):
        text, registry = registry, tmp_path / "registry.csv"
        registry.write_text(text)
    # Given only when `influx` has one: like any field not given, it may come from the environment.
    token: dict[str, Any] = {"influx_token": SecretStr(influx.token)} if influx.token else {}
    settings = ApiSettings(
        _env_file=None,
        mqtt_url=SecretStr(mqtt_url),
        influx_url=influx.url,
        influx_db=influx.database,
        **token,
        profiles=DEFAULT_PROFILES,
        registry=registry,
        api_auth="off",
        # Foresight's background rounds write signals and raise alarms of their own: off unless
        # a test asks for them (tests/integration/test_foresight*.py).
        api_foresight_every=0,
        # Many apps live and die in one test process: frozen, their cyclic garbage would stay.
        api_gc_freeze=False,
    )
    if tokens is not None:
        update = {"api_auth": "on", "api_tokens": tokens, **update}
    return settings.model_copy(update=update) if update else settings


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan entered, and an HTTP client that calls it in-process."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api.test") as client,
    ):
        yield client


TOKENS = {
    "city": "city-token-never-logged",
    "water-north": "water-token-never-logged",
    "lights": "lights-token-never-logged",
    "portal": "portal-token-never-logged",
}


def write_tokens(path: Path) -> Path:
    """A tokens file of TOKENS: the city, water in North (may acknowledge), lights everywhere,
    and an open-data portal."""
    path.write_text(
        yaml.safe_dump(
            {
                "tokens": [
                    {"name": "city", "sha256": hash_token(TOKENS["city"]), "scope": "city"},
                    {
                        "name": "water-north",
                        "sha256": hash_token(TOKENS["water-north"]),
                        "scope": "department",
                        "profiles": ["water_pipe"],
                        "districts": ["North"],
                        "acknowledge": True,
                    },
                    {
                        "name": "lights",
                        "sha256": hash_token(TOKENS["lights"]),
                        "scope": "department",
                        "profiles": ["streetlight"],
                    },
                    {
                        "name": "portal",
                        "sha256": hash_token(TOKENS["portal"]),
                        "scope": "open_data",
                    },
                ]
            }
        )
    )
    return path
