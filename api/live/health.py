"""Can this process reach InfluxDB and the MQTT broker right now?"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from api.core.settings import ApiSettings
from api.core.supervise import Supervisor
from api.live.broker import check_broker
from api.schemas import ComponentPublic, HealthPublic
from common.influx import AsyncInfluxClient

UP = ComponentPublic(status="up")


async def _influx(influx: AsyncInfluxClient, timeout: float) -> ComponentPublic:
    # host:port only: the configured URL may carry credentials.
    parts = urlsplit(influx.config.url)
    where = f"InfluxDB at {parts.hostname}:{parts.port or 'default port'}"
    try:
        answered = await asyncio.wait_for(influx.ping(), timeout)
    except TimeoutError:
        return ComponentPublic(status="down", detail=f"{where}: no answer to /ping in {timeout:g}s")
    if not answered:
        return ComponentPublic(status="down", detail=f"{where}: unreachable, or /ping not 204")
    return UP


async def _broker(settings: ApiSettings) -> ComponentPublic:
    # paho-mqtt blocks; a worker thread keeps the event loop serving other requests meanwhile.
    problem = await asyncio.to_thread(check_broker, settings.mqtt, settings.api_health_timeout)
    return UP if problem is None else ComponentPublic(status="down", detail=problem)


async def health(
    influx: AsyncInfluxClient, settings: ApiSettings, supervisor: Supervisor
) -> HealthPublic:
    influxdb, mqtt = await asyncio.gather(
        _influx(influx, settings.api_health_timeout), _broker(settings)
    )
    background = (
        UP
        if supervisor.failed is None
        else ComponentPublic(status="down", detail=f"died: {supervisor.failed}")
    )
    ok = all(c.status == "up" for c in (influxdb, mqtt, background))
    return HealthPublic(
        status="ok" if ok else "unavailable", influxdb=influxdb, mqtt=mqtt, background=background
    )
