"""What the API's core says when it cannot answer, knowing nothing of HTTP; api.errors turns each
into its response, once, at the boundary.

    ApiError
    ├── InvalidParameter   a parameter only the contract can judge (→ 422, FastAPI's own shape)
    ├── Forbidden          the token's scope does not cover it (→ 403)
    ├── NotFound           no such device, district or alarm (→ 404)
    └── Conflict           the resource's state forbids it (→ 409)

InfluxDB's failures travel as common.errors (InfluxUnavailable → 503, InfluxRejected → 502).
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """Base: its text is the `detail` a client reads."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidParameter(ApiError):
    def __init__(self, name: str, value: Any, message: str, **context: Any) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.value = value
        self.message = message
        self.context = context


class Forbidden(ApiError):
    pass


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


def invalid_query(name: str, value: Any, message: str, **context: Any) -> InvalidParameter:
    """A query parameter `name` with `value` refused, saying why (`context`: machine-readable
    extras such as the allowed values)."""
    return InvalidParameter(name, value, message, **context)


def forbidden(detail: str) -> Forbidden:
    return Forbidden(detail)
