"""Settings of the API process: the common CITYSENSE_* settings plus CITYSENSE_API_* knobs."""

from __future__ import annotations

from pydantic import Field, field_validator

from citysense.settings import CommonSettings
from device_profiles import parse_duration


class ApiSettings(CommonSettings):
    # Loopback by default: the API has no authentication yet, so exposing it is a deliberate act.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    # How far back "latest reading" queries look. Bounding them keeps InfluxDB from scanning
    # every shard of a measurement; it matches the oldest reading ingest accepts (max_age).
    api_latest_lookback: float = Field(default=30 * 86400.0, ge=1.0)
    # A history response never holds more buckets than this; wider requests get a 422.
    api_history_max_points: int = Field(default=10_000, ge=1)
    # Health probes (InfluxDB /ping, MQTT CONNECT) give up after this many seconds.
    api_health_timeout: float = Field(default=3.0, gt=0)

    @field_validator("api_latest_lookback", mode="before")
    @classmethod
    def _lookback(cls, value: str | float) -> float:
        return parse_duration(value)
