"""Devices as the live state holds them: the selection GET /devices, /devices.geojson and
/devices/{id} answer from, shaped as plain dicts.

They answer up to 100,000 devices at once, so they build plain dicts shaped like their response
models (DevicePublic, DeviceListPublic, FeatureCollectionPublic, which document them) for orjson:
constructing and validating four pydantic models per device took 2.2 s of a 2.7 s answer for
60,000 features. tests/unit/test_api_app.py validates these answers against the models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

from api.core.access import check_filters, require_devices
from api.core.contract import Contract
from api.core.errors import NotFound, invalid_query
from api.core.params import check_choice
from api.core.times import format_rfc3339
from api.core.tokens import Principal
from api.live.service import Live
from api.live.state import DeviceState
from api.live.state import Reporting as RepStatus
from api.schemas import Reporting
from device_profiles import Device


def _status(live: Live, state: DeviceState, now: int) -> dict[str, Any]:
    reading = state.reading
    return {
        "reporting": live.state.reporting(state, now).value,
        "connected": state.connected,
        "last_seen": None if reading is None else format_rfc3339(reading.time_ns),
    }


def device_json(live: Live, state: DeviceState, now: int) -> dict[str, Any]:
    """A DevicePublic."""
    device, reading = state.device, state.reading
    status = _status(live, state, now)
    return {
        "device_id": device.device_id,
        "profile": device.profile,
        "district": device.district,
        "latitude": device.latitude,
        "longitude": device.longitude,
        "address": device.address,
        "status": status,
        "reading": None
        if reading is None
        else {"time": status["last_seen"], "values": reading.values},
    }


def feature_json(live: Live, state: DeviceState, now: int) -> dict[str, Any]:
    """A FeaturePublic."""
    device, reading = state.device, state.reading
    return {
        "type": "Feature",
        "id": device.device_id,
        "geometry": {"type": "Point", "coordinates": [device.longitude, device.latitude]},
        "properties": {
            "device_id": device.device_id,
            "profile": device.profile,
            "district": device.district,
            **_status(live, state, now),
            "values": {} if reading is None else reading.values,
        },
    }


def visible_device(principal: Principal, contract: Contract, device_id: str) -> Device:
    """The registered device `principal` may read. A device outside its scope is answered
    exactly like one that does not exist (404): a scoped token must not learn which ids exist."""
    require_devices(principal)
    device = contract.device(device_id)
    if device is None or not principal.sees(device.profile, device.district):
        raise NotFound(f"unknown device {device_id!r}: not in the device registry")
    return device


def parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    try:
        box = tuple(float(part) for part in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise invalid_query("bbox", text, "bbox is min_lon,min_lat,max_lon,max_lat (4 numbers)")
    min_lon, min_lat, max_lon, max_lat = box
    if not (-180 <= min_lon <= max_lon <= 180 and -90 <= min_lat <= max_lat <= 90):
        raise invalid_query(
            "bbox",
            text,
            "bbox needs -180 <= min_lon <= max_lon <= 180 and -90 <= min_lat <= max_lat <= 90 "
            "(a box across the antimeridian is two requests)",
        )
    return min_lon, min_lat, max_lon, max_lat


class _States(Sequence[DeviceState]):
    """The states of a device list, looked up only for the slice a page shows."""

    def __init__(self, devices: Sequence[Device], states: Mapping[str, DeviceState]) -> None:
        self._devices = devices
        self._states = states

    def __len__(self) -> int:
        return len(self._devices)

    @overload
    def __getitem__(self, index: int) -> DeviceState: ...
    @overload
    def __getitem__(self, index: slice) -> list[DeviceState]: ...
    def __getitem__(self, index: int | slice) -> DeviceState | list[DeviceState]:
        if isinstance(index, slice):
            return [self._states[d.device_id] for d in self._devices[index]]
        return self._states[self._devices[index].device_id]


@dataclass(frozen=True, slots=True)
class DeviceFilter:
    """What GET /devices and /devices.geojson select by; all combine."""

    profile: str | None = None
    district: str | None = None
    status: Reporting | None = None
    connected: bool | None = None
    bbox: str | None = None


def select(
    principal: Principal, contract: Contract, live: Live, now: int, wanted: DeviceFilter
) -> Sequence[DeviceState]:
    """The devices `principal` sees that match `wanted`, in device-id order."""
    check_choice("profile", wanted.profile, sorted(contract.profiles))
    check_choice("district", wanted.district, contract.districts)
    box = parse_bbox(wanted.bbox)
    check_filters(principal, wanted.profile, wanted.district)
    live.require_loaded()
    listed = contract.devices(wanted.profile, wanted.district)
    unfiltered = wanted.status is None and wanted.connected is None and box is None
    if unfiltered and principal.sees_devices and principal.profiles is principal.districts is None:
        # Nothing to filter: a page costs its own devices, not the whole selection's (a
        # district's first page of 1,000 scanned all 16,667 of its devices).
        return _States(listed, live.state.devices)
    devices = (d for d in listed if principal.sees(d.profile, d.district))
    return live.state.select(
        now,
        devices,
        reporting=None if wanted.status is None else RepStatus(wanted.status),
        connected=wanted.connected,
        bbox=box,
    )


def device_page(
    live: Live, matching: Sequence[DeviceState], now: int, limit: int, offset: int
) -> dict[str, Any]:
    """A DeviceListPublic."""
    return {
        "total": len(matching),
        "limit": limit,
        "offset": offset,
        "items": [device_json(live, s, now) for s in matching[offset : offset + limit]],
    }


def feature_collection(
    live: Live, matching: Sequence[DeviceState], now: int, limit: int, offset: int
) -> dict[str, Any]:
    """A FeatureCollectionPublic."""
    return {
        "type": "FeatureCollection",
        "total": len(matching),
        "limit": limit,
        "offset": offset,
        "features": [feature_json(live, s, now) for s in matching[offset : offset + limit]],
    }
