"""Which entities exist for a token, and how they link: the entity sets and the navigation
properties of SensorThings 1.1's sensing part, over the catalog.

A token sees exactly what it sees on the rest of the API (api.core.tokens.Principal): a
department its profiles' devices (in its districts), the city everything; open data is refused
before any of this is asked (api.core.access). An entity outside the scope is answered like one
that does not exist.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence

from api.core.tokens import Principal
from api.sta.catalog import Catalog, Ref, split_id
from device_profiles import Device

# navigation property → (target set, to-many?)
NAVIGATION: dict[str, dict[str, tuple[str, bool]]] = {
    "Things": {
        "Locations": ("Locations", True),
        "HistoricalLocations": ("HistoricalLocations", True),
        "Datastreams": ("Datastreams", True),
    },
    "Locations": {
        "Things": ("Things", True),
        "HistoricalLocations": ("HistoricalLocations", True),
    },
    "HistoricalLocations": {"Thing": ("Things", False), "Locations": ("Locations", True)},
    "Datastreams": {
        "Thing": ("Things", False),
        "Sensor": ("Sensors", False),
        "ObservedProperty": ("ObservedProperties", False),
        "Observations": ("Observations", True),
    },
    "Sensors": {"Datastreams": ("Datastreams", True)},
    "ObservedProperties": {"Datastreams": ("Datastreams", True)},
    "Observations": {
        "Datastream": ("Datastreams", False),
        "FeatureOfInterest": ("FeaturesOfInterest", False),
    },
    "FeaturesOfInterest": {"Observations": ("Observations", True)},
}
BY_DEVICE = ("Things", "Locations", "FeaturesOfInterest")


class Graph:
    def __init__(self, catalog: Catalog, principal: Principal) -> None:
        self.catalog = catalog
        self.principal = principal

    def sees(self, device: Device) -> bool:
        return self.principal.sees(device.profile, device.district)

    def devices(self, profile: str | None = None, variant: str | None = None) -> Sequence[Device]:
        """The devices the token sees, in device-id order."""
        profiles = [profile] if profile is not None else sorted(self.catalog.profiles)
        mine = [p for p in profiles if self.principal.sees_profile(p)]
        p = self.principal
        if p.profiles is None and p.districts is None and variant is None:
            return self.catalog.devices(profile)
        lists = [[d for d in self.catalog.devices(name) if self.sees(d)] for name in mine]
        merged = heapq.merge(*lists, key=lambda d: d.device_id)
        return [d for d in merged if variant is None or d.variant == variant]

    def collection(self, kind: str) -> Iterable[Ref]:
        """Every entity of a set the token sees, in id order (Observations: observations.py)."""
        if kind in BY_DEVICE:
            return (Ref(kind, (d.device_id,)) for d in self.devices())
        if kind == "Datastreams":
            return self._datastreams(self.devices())
        if kind == "Sensors":
            return [Ref(kind, s) for s in self.catalog.sensors if self.principal.sees_profile(s[0])]
        if kind == "ObservedProperties":
            return [
                Ref(kind, op)
                for op in self.catalog.observed_properties()
                if self.principal.sees_profile(op[0])
            ]
        return []  # HistoricalLocations: the registry keeps no history of where devices were

    def _datastreams(self, devices: Iterable[Device], field: str | None = None) -> Iterator[Ref]:
        for device in devices:
            for name in [field] if field is not None else self.catalog.fields(device.profile):
                yield Ref("Datastreams", (device.device_id, name))

    def find(self, kind: str, text: str) -> Ref | None:
        """The entity of `kind` with id `text`, if the token sees it."""
        key = split_id(kind, text)
        if key is None:
            return None
        if kind == "Sensors":
            return Ref(kind, key) if key in self._sensors() else None
        if kind == "ObservedProperties":
            spec = self.catalog.profiles.get(key[0])
            ok = spec is not None and key[1] in spec.fields and self.principal.sees_profile(key[0])
            return Ref(kind, key) if ok else None
        device = self.catalog.device(key[0])
        if device is None or not self.sees(device):
            return None
        if kind in ("Datastreams", "Observations") and (
            key[1] not in self.catalog.profiles[device.profile].fields
        ):
            return None
        return Ref(kind, key) if kind in NAVIGATION and kind != "HistoricalLocations" else None

    def _sensors(self) -> set[tuple[str, ...]]:
        return {s for s in self.catalog.sensors if self.principal.sees_profile(s[0])}

    def related(self, ref: Ref, nav: str) -> Iterable[Ref]:
        """The entities `nav` of `ref` leads to (not Observations: those come from InfluxDB)."""
        kind, key = ref.kind, ref.key
        if kind == "Things" and nav == "Locations":
            return [Ref("Locations", key)]
        if kind == "Locations" and nav == "Things":
            return [Ref("Things", key)]
        if kind == "Things" and nav == "Datastreams":
            device = self.catalog.device(key[0])
            return [] if device is None else self._datastreams([device])
        if kind == "Datastreams":
            return self._of_datastream(key, nav)
        if kind == "Observations":
            if nav == "Datastream":
                return [Ref("Datastreams", key[:2])]
            return [Ref("FeaturesOfInterest", key[:1])]
        if kind == "Sensors":
            return self._datastreams(self.devices(key[0], key[1] if key[1] else ""))
        if kind == "ObservedProperties":
            return self._datastreams(self.devices(key[0]), key[1])
        return []  # HistoricalLocations of anything: none

    def _of_datastream(self, key: tuple[str, ...], nav: str) -> list[Ref]:
        device = self.catalog.device(key[0])
        assert device is not None
        if nav == "Thing":
            return [Ref("Things", key[:1])]
        if nav == "Sensor":
            return [Ref("Sensors", (device.profile, device.variant))]
        return [Ref("ObservedProperties", (device.profile, key[1]))]
