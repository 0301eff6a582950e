"""The city operations screen (the page at /screen): its settings, the static files it is made of,
the district outlines it draws, and what a token's page may show.

The page is static: it holds no data and calls the API with the token like any client, so it can
never show more than the token's scope. What it gets here is only what it needs to lay itself
out for that scope (which profiles, fields, units and districts to draw).

Settings (environment, `CITYSENSE_SCREEN_*`):

| variable | default | meaning |
|---|---|---|
| `CITYSENSE_SCREEN_DISTRICTS` | the sample city's outlines | GeoJSON of district outlines (a feature's `district` or `name` property names it) |
| `CITYSENSE_SCREEN_TILES` | — | a tile URL template (`https://tiles.example/{z}/{x}/{y}.png`) for deployments with a tile server |
| `CITYSENSE_SCREEN_TIMEZONE` | `Asia/Shanghai` | the city's IANA time zone: times on the page are shown in it |
| `CITYSENSE_SCREEN_WALL_CYCLE` | `20` | seconds each district is shown in wall mode |
"""  # noqa: E501

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.core.contract import Contract
from api.core.errors import NotFound
from api.core.tokens import Principal
from device_profiles import DEFAULT_REGISTRY

ASSETS = Path(__file__).resolve().parents[1] / "screen"
SAMPLE_DISTRICTS = DEFAULT_REGISTRY.with_name("sample_city_districts.geojson")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
}


class ScreenSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CITYSENSE_SCREEN_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    districts: Path = SAMPLE_DISTRICTS
    tiles: str | None = None
    timezone: str = "Asia/Shanghai"
    wall_cycle: float = Field(default=20.0, ge=2.0)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"not an IANA time zone: {value!r}") from exc
        return value

    @field_validator("tiles")
    @classmethod
    def _tiles(cls, value: str | None) -> str | None:
        if not value:
            return None
        if urlsplit(value).scheme not in ("http", "https") or "{z}" not in value:
            raise ValueError("a tile URL is http(s)://host/…{z}/{x}/{y}…")
        return value

    @property
    def tile_origin(self) -> str | None:
        """Where tiles come from, the one origin besides the API the page may load from."""
        if self.tiles is None:
            return None
        parts = urlsplit(self.tiles)
        return f"{parts.scheme}://{parts.netloc}"


@lru_cache(maxsize=1)
def screen_settings() -> ScreenSettings:
    return ScreenSettings()


def asset(name: str) -> tuple[Path, str]:
    """A file of the page and its content type; NotFound for anything outside the folder."""
    path = (ASSETS / name).resolve()
    kind = CONTENT_TYPES.get(path.suffix)
    if kind is None or not path.is_relative_to(ASSETS) or not path.is_file():
        raise NotFound(f"no such screen asset {name!r}")
    return path, kind


def content_policy(settings: ScreenSettings) -> str:
    """The page loads nothing but from the API (and the tile server, if there is one): no CDN, no
    inline script, nowhere else to send data."""
    images = " ".join(filter(None, ["'self'", "data:", settings.tile_origin]))
    return (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        f"img-src {images}; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    )


@lru_cache(maxsize=4)
def _outlines(path: Path, modified: float) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(path.read_bytes())
    return data


def outlines(settings: ScreenSettings, principal: Principal) -> dict[str, Any]:
    """The district outlines the operator provides, those of the token's districts only."""
    path = settings.districts
    data = _outlines(path, path.stat().st_mtime)
    features = [f for f in data.get("features", []) if principal.sees_district(_district_of(f))]
    return {"type": "FeatureCollection", "features": features}


def _district_of(feature: dict[str, Any]) -> str:
    properties = feature.get("properties") or {}
    return str(properties.get("district") or properties.get("name") or "")


def _profile_view(contract: Contract, name: str) -> dict[str, Any]:
    profile = contract.profiles[name]
    return {
        "description": profile.description,
        "reporting_interval": profile.reporting_interval,
        "fields": {
            field: {
                "type": spec.type.value,
                "unit": spec.unit,
                "kind": spec.effective_kind.value,
            }
            for field, spec in profile.fields.items()
        },
        "summary": [
            {"name": s.name, "op": s.op.value, "field": s.field, "equals": s.equals}
            for s in profile.summary
        ],
        "alarms": [
            {"name": r.name, "field": r.field, "severity": r.severity.value} for r in profile.alarms
        ],
    }


def view(
    principal: Principal, contract: Contract, settings: ScreenSettings, open_data_timezone: str
) -> dict[str, Any]:
    """What the page lays itself out for: who signed in, what its scope lets it read, and how the
    city wants times shown. Nothing here is device data."""
    profiles = [p for p in sorted(contract.profiles) if principal.sees_profile(p)]
    return {
        "name": principal.name,
        "scope": principal.scope.value,
        "acknowledge": principal.acknowledge,
        "devices": principal.sees_devices,
        # Dead letters carry no district: a token limited to districts may not read them.
        "dead_letters": principal.sees_devices and principal.districts is None,
        "timezone": settings.timezone,
        "open_data_timezone": open_data_timezone,
        "tiles": settings.tiles,
        "wall_cycle": settings.wall_cycle,
        "districts": [d for d in contract.districts if principal.sees_district(d)],
        "profiles": {p: _profile_view(contract, p) for p in profiles},
    }
