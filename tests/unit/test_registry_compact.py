"""A registry's devices share what every device has alike (device_profiles.load): one set of the
fields set, one string per profile and district name. Sharing changes no answer: every field is
still set, and a copy with changes gets a set of its own."""

from __future__ import annotations

from pathlib import Path

from device_profiles import load_profiles, load_registry

ROWS = """device_id,profile,district,latitude,longitude,address
SL-1,streetlight,North,30.1,120.1,1 Main St
SL-2,streetlight,North,30.2,120.2,
WP-1,water_pipe,South,30.3,120.3,2 Side St
"""


def test_devices_share_their_fields_set_and_names(tmp_path: Path) -> None:
    path = tmp_path / "registry.csv"
    path.write_text(ROWS)
    devices = load_registry(path, load_profiles()).devices
    one, two, pipe = devices["SL-1"], devices["SL-2"], devices["WP-1"]
    assert one.model_fields_set == set(type(one).model_fields)
    assert one.model_fields_set is two.model_fields_set is pipe.model_fields_set
    assert one.profile is two.profile
    assert one.district is two.district
    changed = one.model_copy(update={"address": "3 New Rd"})
    assert changed.address == "3 New Rd"
    assert changed.model_fields_set is not one.model_fields_set
    assert one.model_fields_set == set(type(one).model_fields)
