"""Errors translated once, at the HTTP boundary.

The core raises its own tree (api.core.errors) and InfluxDB's (common.errors); this module turns
them into responses. Messages leave the process only after every configured secret has been
masked (api.core.scrub).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from api.core.errors import ApiError, Conflict, Forbidden, InvalidParameter, NotFound
from api.core.scrub import Scrubber
from api.schemas import ErrorPublic
from api.sta.errors import StaError
from common.errors import InfluxRejected, InfluxUnavailable

logger = logging.getLogger(__name__)

_STATUS: dict[type[ApiError], int] = {Forbidden: 403, NotFound: 404, Conflict: 409}


def validation_error(exc: InvalidParameter) -> RequestValidationError:
    """A parameter the core refused, shaped exactly like FastAPI's own validation errors so
    clients parse one format."""
    error: dict[str, Any] = {
        "type": "value_error",
        "loc": ("query", exc.name),
        "msg": exc.message,
        "input": exc.value,
    }
    if exc.context:
        error["ctx"] = exc.context
    return RequestValidationError([error])


def install(app: FastAPI, scrub: Scrubber) -> None:
    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, InvalidParameter)
        return await request_validation_exception_handler(request, validation_error(exc))

    async def refused(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return JSONResponse({"detail": exc.detail}, status_code=_STATUS[type(exc)])

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

    async def sta_refused(_request: Request, exc: Exception) -> JSONResponse:
        # The error document SensorThings servers (FROST) answer with.
        assert isinstance(exc, StaError)
        body = {"code": exc.status, "type": "error", "message": exc.detail}
        return JSONResponse(body, status_code=exc.status)

    app.add_exception_handler(InvalidParameter, invalid)
    app.add_exception_handler(StaError, sta_refused)
    for kind in _STATUS:
        app.add_exception_handler(kind, refused)
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
