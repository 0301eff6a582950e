"""The device contract as the API serves it: profiles, registry, and lookups built once at start.

Listing "all streetlights of district X" happens on every page request; scanning and sorting a
registry of millions of devices each time would dominate the request, so devices are indexed by
(profile, district) once, in device-id order, which is also the stable order of pagination.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from device_profiles import Device, Profile, Registry

_Key = tuple[str | None, str | None]


@dataclass(frozen=True, slots=True)
class Contract:
    profiles: Mapping[str, Profile]
    registry: Registry
    _index: Mapping[_Key, Sequence[Device]]

    @classmethod
    def build(cls, profiles: Mapping[str, Profile], registry: Registry) -> Contract:
        index: defaultdict[_Key, list[Device]] = defaultdict(list)
        for device_id in sorted(registry.devices):
            device = registry.devices[device_id]
            for key in (
                (None, None),
                (device.profile, None),
                (None, device.district),
                (device.profile, device.district),
            ):
                index[key].append(device)
        return cls(profiles=profiles, registry=registry, _index=dict(index))

    @property
    def districts(self) -> tuple[str, ...]:
        return self.registry.districts

    def device(self, device_id: str) -> Device | None:
        return self.registry.get(device_id)

    def devices(self, profile: str | None = None, district: str | None = None) -> Sequence[Device]:
        """Registered devices matching both filters (None matches all), ordered by device id."""
        return self._index.get((profile, district), ())
