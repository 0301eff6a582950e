"""Health: can this process reach InfluxDB and the MQTT broker right now? No authentication."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import InfluxDep, RuntimeDep, SettingsDep
from api.live.health import health as check
from api.schemas import HealthPublic

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    summary="Reachability of InfluxDB and the MQTT broker",
    description="InfluxDB must answer /ping; the broker must accept an MQTT CONNECT with the "
    "configured credentials (a successful CONNACK). 503 names the component that is down.",
    responses={503: {"model": HealthPublic, "description": "A component is down"}},
)
async def health(
    runtime: RuntimeDep, influx: InfluxDep, settings: SettingsDep, response: Response
) -> HealthPublic:
    answer = await check(influx, settings, runtime.supervisor, runtime.live.broker)
    if answer.status != "ok":
        response.status_code = 503
    return answer
