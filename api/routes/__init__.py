"""HTTP routes, one module per resource; `api_router` gathers them for api.main."""

from fastapi import APIRouter

from api.routes.aggregates import router as aggregates_router
from api.routes.alarms import router as alarms_router
from api.routes.dead_letters import router as dead_letters_router
from api.routes.devices import geo_router
from api.routes.devices import router as devices_router
from api.routes.districts import router as districts_router
from api.routes.health import router as health_router
from api.routes.metrics import router as metrics_router
from api.routes.screen import router as screen_router
from api.routes.signals import router as signals_router
from api.routes.sta import router as sta_router
from api.routes.state import router as state_router
from api.routes.stream import router as stream_router

api_router = APIRouter()
api_router.include_router(geo_router)
api_router.include_router(devices_router)
api_router.include_router(dead_letters_router)
api_router.include_router(aggregates_router)
api_router.include_router(alarms_router)
api_router.include_router(districts_router)
api_router.include_router(health_router)
api_router.include_router(metrics_router)
api_router.include_router(stream_router)
api_router.include_router(screen_router)
api_router.include_router(sta_router)
api_router.include_router(signals_router)
api_router.include_router(state_router)
