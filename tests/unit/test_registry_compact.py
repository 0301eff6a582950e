"""A registry's devices are compact (device_profiles.load): slotted, with no per-instance
dictionary, and one string per profile and district name. Compactness changes no answer: a
device still validates and compares like any other."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from pydantic import ValidationError

from device_profiles import Device, load_profiles, load_registry
from device_profiles.model import DEVICE

ROWS = """device_id,profile,district,latitude,longitude,address
SL-1,streetlight,North,30.1,120.1,1 Main St
SL-2,streetlight,North,30.2,120.2,
WP-1,water_pipe,South,30.3,120.3,2 Side St
"""


def test_devices_are_slotted_and_share_their_names(tmp_path: Path) -> None:
    path = tmp_path / "registry.csv"
    path.write_text(ROWS)
    devices = load_registry(path, load_profiles()).devices
    one, two, pipe = devices["SL-1"], devices["SL-2"], devices["WP-1"]
    assert not hasattr(one, "__dict__")
    assert one.profile is two.profile
    assert one.district is two.district
    assert pipe.latitude == 30.3 and two.address == ""
    changed = dataclasses.replace(one, address="3 New Rd")
    assert changed.address == "3 New Rd" and one.address == "1 Main St"
    assert changed == Device(
        device_id="SL-1",
        profile="streetlight",
        district="North",
        latitude=30.1,
        longitude=120.1,
        address="3 New Rd",
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.address = "elsewhere"  # type: ignore[misc]


def test_a_device_still_refuses_what_the_registry_refuses() -> None:
    row = {"device_id": "SL 1", "profile": "streetlight", "district": "North"}
    with pytest.raises(ValidationError) as bad:
        DEVICE.validate_python({**row, "latitude": "91", "longitude": "0", "extra": "x"})
    where = {error["loc"][0] for error in bad.value.errors()}
    assert where == {"device_id", "latitude", "extra"}
