"""Scope checks: who (api.tokens.Principal) may see which devices.

Outside the scope is 403, said plainly; a department that lists without a filter simply gets its
own devices. Open-data tokens never reach a route that names a device.
"""

from __future__ import annotations

from api.core.errors import forbidden
from api.core.tokens import Principal
from device_profiles import Device

OPEN_DATA_ONLY = (
    "an open-data token reads aggregates over groups of devices only (/aggregates, /districts)"
)


def require_devices(principal: Principal) -> None:
    if not principal.sees_devices:
        raise forbidden(OPEN_DATA_ONLY)


def check_device(principal: Principal, device: Device) -> None:
    require_devices(principal)
    if not principal.sees(device.profile, device.district):
        raise forbidden(
            f"token {principal.name!r} may not read {device.profile} devices in {device.district}"
        )


def check_filters(principal: Principal, profile: str | None, district: str | None) -> None:
    """An explicit filter outside the scope is refused rather than silently answered empty."""
    require_devices(principal)
    if profile is not None and not principal.sees_profile(profile):
        raise forbidden(f"token {principal.name!r} may not read profile {profile!r}")
    if district is not None and not principal.sees_district(district):
        raise forbidden(f"token {principal.name!r} may not read district {district!r}")
