"""What /signals, /forecasts and /quality answer: points of foresight's measurements."""

from __future__ import annotations

from pydantic import BaseModel, Field


class StoredPointPublic(BaseModel):
    time: str = Field(
        description="RFC 3339 UTC: the night's or day's local midnight, the hour, "
        "or the end of the window judged"
    )
    tags: dict[str, str] = Field(description="signal/model, profile, district, device_id")
    values: dict[str, float | int | bool | str] = Field(description="The point's fields")


class StoredListPublic(BaseModel):
    items: list[StoredPointPublic]
