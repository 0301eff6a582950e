"""Errors translated once, at the HTTP boundary.

Route code raises the CitySense error tree (citysense.errors) or `invalid_query`; this module turns
them into responses. Messages leave the process only after every configured secret (InfluxDB
token, MQTT password, credentials in a URL) has been masked: an error text from a library may
quote a URL or a header, and a 503 body or a log line must never carry a password.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.core.settings import ApiSettings
from api.schemas import ErrorPublic
from common.errors import InfluxRejected, InfluxUnavailable

logger = logging.getLogger(__name__)

MASK = "***"


def secrets_of(settings: ApiSettings) -> tuple[str, ...]:
    """Every secret the settings hold, longest first so no secret is masked only partly."""
    found: list[str] = []
    if settings.influx_token is not None:
        found.append(settings.influx_token.get_secret_value())
    if settings.mqtt.password:
        found.append(settings.mqtt.password)
    influx_password = urlsplit(settings.influx_url).password
    if influx_password:
        found.append(influx_password)
    return tuple(sorted({s for s in found if s}, key=len, reverse=True))


class Scrubber:
    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = tuple(secrets)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text


def invalid_query(name: str, value: Any, message: str, **context: Any) -> RequestValidationError:
    """A 422 for a query parameter that only the contract can judge (a profile, a field name),
    shaped exactly like FastAPI's own validation errors so clients parse one format."""
    error: dict[str, Any] = {
        "type": "value_error",
        "loc": ("query", name),
        "msg": message,
        "input": value,
    }
    if context:
        error["ctx"] = context
    return RequestValidationError([error])


def install(app: FastAPI, scrub: Scrubber) -> None:
    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, InfluxUnavailable)
        detail = scrub(f"InfluxDB is unavailable, retry later: {exc}")
        logger.warning("%s %s: %s", request.method, request.url.path, detail)
        headers = {}
        if exc.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return JSONResponse({"detail": detail}, status_code=503, headers=headers)

    async def rejected(request: Request, exc: Exception) -> JSONResponse:
        # Our statements are built from the contract; InfluxDB refusing one means a deployment
        # problem (database missing, type conflict from old data), not a client mistake.
        detail = scrub(f"InfluxDB rejected the query: {exc}")
        logger.error("%s %s: %s", request.method, request.url.path, detail)
        return JSONResponse({"detail": detail}, status_code=502)

    app.add_exception_handler(InfluxUnavailable, unavailable)
    app.add_exception_handler(InfluxRejected, rejected)


_DESCRIPTIONS = {
    401: "No token, or not a valid one",
    403: "The token's scope does not cover this",
    404: "Not found",
    409: "Conflicts with the resource's current state",
    502: "InfluxDB rejected the query: a deployment problem, the detail says which",
    503: "InfluxDB is unavailable; retry later",
}


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the error statuses a route can answer with."""
    return {s: {"model": ErrorPublic, "description": _DESCRIPTIONS[s]} for s in statuses}
