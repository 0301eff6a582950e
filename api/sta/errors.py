"""What the SensorThings API refuses, knowing nothing of HTTP; api.errors turns a `StaError`
into the error document SensorThings servers answer with (`{"code", "type", "message"}`)."""

from __future__ import annotations

from api.core.errors import ApiError


class StaError(ApiError):
    """A request the SensorThings API cannot answer; `status` is its HTTP status."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


def bad_request(detail: str) -> StaError:
    return StaError(400, detail)


def not_found(detail: str) -> StaError:
    return StaError(404, detail)
