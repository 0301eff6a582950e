"""The SensorThings entities the registry and the profiles define, and their stable ids.

    Thing, Location, FeatureOfInterest   id = device id                      SL-000001
    Sensor                               id = profile[:variant]               streetlight:lumio
    ObservedProperty                     id = profile:field                   water_pipe:pressure
    Datastream                           id = device id:field                 SL-000001:voltage
    Observation                          id = device id:field:time in ns      SL-000001:voltage:17…

A device id may contain `:` but a field or profile name never does (device_profiles.model), so
each id splits unambiguously from the right. Ids follow from the contract alone: the same device
and field are the same Datastream across restarts and replicas.

The catalog is built once per contract (the registry is read only while the API runs).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from api.core.contract import Contract
from device_profiles import Device, Profile


@dataclass(frozen=True, slots=True)
class Ref:
    """One entity: its set and its key (ids.py's parts)."""

    kind: str
    key: tuple[str, ...]

    @property
    def id(self) -> str:
        if self.kind == "Sensors" and not self.key[1]:
            return self.key[0]  # a profile without a variant
        return ":".join(self.key)


SETS = (
    "Things",
    "Locations",
    "HistoricalLocations",
    "Datastreams",
    "Sensors",
    "ObservedProperties",
    "Observations",
    "FeaturesOfInterest",
)


def split_id(kind: str, text: str) -> tuple[str, ...] | None:
    """The key of an id of `kind`, or None if it cannot be one."""
    if kind in ("Things", "Locations", "FeaturesOfInterest"):
        return (text,)
    if kind == "Sensors":
        return tuple(text.split(":", 1)) if ":" in text else (text, "")
    if kind in ("ObservedProperties", "Datastreams"):
        parts = text.rsplit(":", 1)
        return (parts[0], parts[1]) if len(parts) == 2 else None
    if kind == "Observations":
        parts = text.rsplit(":", 2)
        if len(parts) != 3 or not parts[2].lstrip("-").isdigit() or len(parts[2]) > 20:
            return None
        return (parts[0], parts[1], parts[2])
    return None


@dataclass(frozen=True, slots=True)
class Catalog:
    contract: Contract
    # (profile, variant) of every Sensor: each profile, and each variant the registry uses.
    sensors: tuple[tuple[str, str], ...]

    @classmethod
    def build(cls, contract: Contract) -> Catalog:
        used = {(d.profile, d.variant) for d in contract.registry.devices.values() if d.variant}
        sensors = sorted({(p, "") for p in contract.profiles} | used)
        return cls(contract, tuple(sensors))

    @property
    def profiles(self) -> Mapping[str, Profile]:
        return self.contract.profiles

    def device(self, device_id: str) -> Device | None:
        return self.contract.device(device_id)

    def devices(self, profile: str | None = None) -> Sequence[Device]:
        return self.contract.devices(profile)

    def fields(self, profile: str) -> list[str]:
        return list(self.contract.profiles[profile].fields)

    def observed_properties(self) -> Iterator[tuple[str, str]]:
        for name in sorted(self.contract.profiles):
            for field in self.contract.profiles[name].fields:
                yield name, field


_CATALOGS: dict[int, Catalog] = {}


def catalog_of(contract: Contract) -> Catalog:
    """The catalog of `contract`, built on first use (it holds the contract, so its id stays
    that contract's for as long as the entry lives)."""
    found = _CATALOGS.get(id(contract))
    if found is None or found.contract is not contract:
        if len(_CATALOGS) > 8:  # tests build many apps in one process
            _CATALOGS.clear()
        found = _CATALOGS[id(contract)] = Catalog.build(contract)
    return found
