"""Can this process reach InfluxDB and the MQTT broker right now?"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from api.core.settings import ApiSettings
from api.core.supervise import Supervisor
from api.live.broker import BrokerProbe
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


async def _broker(probe: BrokerProbe) -> ComponentPublic:
    problem = await probe.problem()
    return UP if problem is None else ComponentPublic(status="down", detail=problem)


async def health(
    influx: AsyncInfluxClient, settings: ApiSettings, supervisor: Supervisor, probe: BrokerProbe
) -> HealthPublic:
    influxdb, mqtt = await asyncio.gather(
        _influx(influx, settings.api_health_timeout), _broker(probe)
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
