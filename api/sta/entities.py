"""The properties of each SensorThings entity, from the contract (and, for a Datastream's
phenomenonTime and an Observation, from values read in InfluxDB by observations.py).

Plain dicts: pages of 100 Things with their Datastreams expanded are 1,500 entities, and the
rest of the API builds its large answers the same way (api.live.devices)."""

from __future__ import annotations

from typing import Any

from api.core.times import format_rfc3339
from api.sta.catalog import Catalog, Ref
from device_profiles import Device, FieldSpec, FieldType

GEOJSON = "application/geo+json"
OM = "http://www.opengis.net/def/observationType/OGC-OM/2.0/"
OBSERVATION_TYPES = {
    FieldType.NUMBER: OM + "OM_Measurement",
    FieldType.INTEGER: OM + "OM_Measurement",
    FieldType.BOOLEAN: OM + "OM_TruthObservation",
    FieldType.STATE: OM + "OM_CategoryObservation",
    FieldType.TEXT: OM + "OM_Observation",
}

# The profiles' units as UCUM codes, with a name. Our profiles already write most units in UCUM
# (Cel, m3/h, ug/m3); a few are spelled the engineers' way.
UCUM = "http://unitsofmeasure.org/ucum.html#"
UNITS: dict[str, tuple[str, str]] = {
    "%": ("percent", "%"),
    "1": ("dimensionless", "1"),
    "A": ("ampere", "A"),
    "mA": ("milliampere", "mA"),
    "Cel": ("degree Celsius", "Cel"),
    "Hz": ("hertz", "Hz"),
    "V": ("volt", "V"),
    "W": ("watt", "W"),
    "kW": ("kilowatt", "kW"),
    "Wh": ("watt hour", "W.h"),
    "kWh": ("kilowatt hour", "kW.h"),
    "kvar": ("kilovolt-ampere reactive", "kV.A{reactive}"),
    "kPa": ("kilopascal", "kPa"),
    "m3": ("cubic metre", "m3"),
    "m3/h": ("cubic metre per hour", "m3/h"),
    "ug/m3": ("microgram per cubic metre", "ug/m3"),
    "deg": ("degree (angle)", "deg"),
    "dBm": ("decibel-milliwatt", "dB[mW]"),
    "dB(A)": ("A-weighted decibel", "dB{A}"),
    "NTU": ("nephelometric turbidity unit", "{NTU}"),
}

# Where each profile's field names come from (FIWARE Smart Data Models).
SMART_DATA_MODELS = {
    "streetlight": "https://smartdatamodels.org/dataModel.Streetlighting/",
    "water_pipe": "https://smartdatamodels.org/dataModel.WaterDistribution/",
    "power_meter": "https://smartdatamodels.org/dataModel.Energy/",
}
SDM_DEFAULT = "https://smartdatamodels.org/"


def unit_of(spec: FieldSpec) -> dict[str, str | None]:
    if spec.unit is None:  # states, flags, text: SensorThings leaves the unit empty
        return {"name": None, "symbol": None, "definition": None}
    name, code = UNITS.get(spec.unit, (spec.unit, spec.unit))
    return {"name": name, "symbol": code, "definition": UCUM + code}


def _point(device: Device) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [device.longitude, device.latitude]}


def thing(device: Device) -> dict[str, Any]:
    where = f" at {device.address}" if device.address else ""
    return {
        "name": device.device_id,
        "description": f"{device.profile} {device.device_id}{where}, {device.district}",
        "properties": {
            "profile": device.profile,
            "district": device.district,
            "address": device.address,
            "variant": device.variant or None,
        },
    }


def location(device: Device) -> dict[str, Any]:
    return {
        "name": device.address or device.device_id,
        "description": f"where {device.device_id} stands, {device.district}",
        "encodingType": GEOJSON,
        "location": _point(device),
    }


def feature(device: Device) -> dict[str, Any]:
    return {
        "name": device.device_id,
        "description": f"the surroundings of {device.device_id}, {device.district}",
        "encodingType": GEOJSON,
        "feature": _point(device),
    }


def sensor(catalog: Catalog, profile: str, variant: str) -> dict[str, Any]:
    described = catalog.profiles[profile].description
    return {
        "name": f"{profile} ({variant})" if variant else profile,
        "description": f"{variant} firmware of: {described}" if variant else described,
        "encodingType": "text/plain",
        "metadata": f"CitySense device profile {profile!r}"
        + (f", vendor variant {variant!r}" if variant else ""),
        "properties": {"profile": profile, "variant": variant or None},
    }


def observed_property(catalog: Catalog, profile: str, field: str) -> dict[str, Any]:
    spec = catalog.profiles[profile].fields[field]
    return {
        "name": field,
        "definition": SMART_DATA_MODELS.get(profile, SDM_DEFAULT) + field,
        "description": spec.description or f"{field} of a {profile}",
        "properties": {"profile": profile, "type": spec.type.value, "kind": spec.effective_kind},
    }


def datastream(
    catalog: Catalog, device: Device, field: str, span: tuple[int, int] | None
) -> dict[str, Any]:
    spec = catalog.profiles[device.profile].fields[field]
    return {
        "name": f"{field} of {device.device_id}",
        "description": spec.description or f"{field} of {device.profile} {device.device_id}",
        "unitOfMeasurement": unit_of(spec),
        "observationType": OBSERVATION_TYPES[spec.type],
        "observedArea": _point(device),
        "phenomenonTime": span_text(span),
        "resultTime": None,
        "properties": {"profile": device.profile, "field": field},
    }


def span_text(span: tuple[int, int] | None) -> str | None:
    """A time interval as SensorThings writes one (ISO 8601 start/end); None without data."""
    return None if span is None else f"{format_rfc3339(span[0])}/{format_rfc3339(span[1])}"


def observation(time_ns: int, result: Any) -> dict[str, Any]:
    return {"phenomenonTime": format_rfc3339(time_ns), "resultTime": None, "result": result}


def properties(catalog: Catalog, ref: Ref) -> dict[str, Any]:
    """The properties of an entity known from the contract alone (a Datastream's
    phenomenonTime and Observations need InfluxDB: observations.py)."""
    kind, key = ref.kind, ref.key
    if kind == "Sensors":
        return sensor(catalog, key[0], key[1])
    if kind == "ObservedProperties":
        return observed_property(catalog, key[0], key[1])
    device = catalog.device(key[0])
    assert device is not None, ref  # refs are made from the registry
    if kind == "Things":
        return thing(device)
    if kind == "Locations":
        return location(device)
    if kind == "FeaturesOfInterest":
        return feature(device)
    if kind == "Datastreams":
        return datastream(catalog, device, key[1], None)
    raise ValueError(f"no properties of {kind} from the contract")
