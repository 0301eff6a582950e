"""Scope checks: who (api.tokens.Principal) may see which devices.

A filter outside the scope (a profile or district, names every token may know) is 403, said
plainly; a device or alarm id outside it is 404, like an id that does not exist, so a scoped token
cannot learn which ids exist (api.live.devices, api.live.alarm_queries). A department that lists
without a filter simply gets its own devices. Open-data tokens never reach a route that names a
device.
"""

from __future__ import annotations

from api.core.errors import forbidden
from api.core.tokens import Principal

OPEN_DATA_ONLY = (
    "an open-data token reads aggregates over groups of devices only (/aggregates, /districts)"
)


def require_devices(principal: Principal) -> None:
    if not principal.sees_devices:
        raise forbidden(OPEN_DATA_ONLY)


def check_filters(principal: Principal, profile: str | None, district: str | None) -> None:
    """An explicit filter outside the scope is refused rather than silently answered empty."""
    require_devices(principal)
    if profile is not None and not principal.sees_profile(profile):
        raise forbidden(f"token {principal.name!r} may not read profile {profile!r}")
    if district is not None and not principal.sees_district(district):
        raise forbidden(f"token {principal.name!r} may not read district {district!r}")
