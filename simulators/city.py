"""A sample city: a deterministic device registry over several districts.

`python -m simulators.city > device_profiles/registry/sample_city.csv` regenerates the shipped
file; `citysense simulate --registry-out` writes larger cities for load tests.
"""

from __future__ import annotations

import csv
import random
import sys
from dataclasses import dataclass
from typing import TextIO

from device_profiles.load import REGISTRY_COLUMNS


@dataclass(frozen=True, slots=True)
class District:
    name: str
    latitude: float
    longitude: float


DISTRICTS = (
    District("Shangcheng", 30.2425, 120.1693),
    District("Gongshu", 30.3192, 120.1419),
    District("Xihu", 30.2592, 120.1300),
    District("Binjiang", 30.2084, 120.2107),
    District("Xiaoshan", 30.1626, 120.2645),
    District("Yuhang", 30.4190, 120.3010),
)

# Share of each profile in a city's fleet and the id prefix its devices get.
FLEET_MIX = (("streetlight", "SL", 0.6), ("water_pipe", "WP", 0.2), ("power_meter", "PM", 0.2))

STREETS = ("Yan'an Rd", "Wenyi Rd", "Jiangnan Ave", "Tianmushan Rd", "Qiutao Rd", "Moganshan Rd")


def city_rows(devices: int, seed: int = 7) -> list[dict[str, str]]:
    """`devices` registry rows, spread over profiles by FLEET_MIX and round-robin over districts."""
    rng = random.Random(seed)  # noqa: S311 - a simulation, not security
    rows: list[dict[str, str]] = []
    for profile, prefix, share in FLEET_MIX:
        count = round(devices * share) if profile != FLEET_MIX[-1][0] else devices - len(rows)
        for n in range(count):
            district = DISTRICTS[n % len(DISTRICTS)]
            rows.append(
                {
                    "device_id": f"{prefix}-{n + 1:06d}",
                    "profile": profile,
                    "district": district.name,
                    "latitude": f"{district.latitude + rng.uniform(-0.03, 0.03):.6f}",
                    "longitude": f"{district.longitude + rng.uniform(-0.03, 0.03):.6f}",
                    "address": f"{rng.randint(1, 999)} {rng.choice(STREETS)}",
                }
            )
    return rows


def write_city(out: TextIO, devices: int, seed: int = 7) -> int:
    writer = csv.DictWriter(out, fieldnames=REGISTRY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    rows = city_rows(devices, seed)
    writer.writerows(rows)
    return len(rows)


if __name__ == "__main__":
    write_city(sys.stdout, int(sys.argv[1]) if len(sys.argv) > 1 else 3000)
