"""Readings written straight into InfluxDB, independent of ingest, and the sample devices and
readings most API tests are seeded with."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.times import HOUR, MIN
from wire.lineproto import FieldValue, line

Scalar = FieldValue


@dataclass(frozen=True)
class Point:
    measurement: str
    device_id: str
    district: str
    fields: dict[str, Scalar]
    time_ns: int


def line_protocol(points: Iterable[Point]) -> bytes:
    """The points as InfluxDB line protocol, by the tree's one encoder (wire.lineproto)."""
    return "\n".join(
        line(p.measurement, {"device_id": p.device_id, "district": p.district}, p.fields, p.time_ns)
        for p in points
    ).encode()


REGISTRY = [
    # device_id, profile, district
    ("SL-A1", "streetlight", "North"),
    ("SL-A2", "streetlight", "North"),
    ("SL-A3", "streetlight", "North"),  # registered, never reports
    ("SL-A4", "streetlight", "North"),  # last reading 3 h ago
    ("SL-H1", "streetlight", "North"),  # dense history 6 h to 4 h ago
    ("SL-K1", "streetlight", "King's Cross"),
    ("WP-A1", "water_pipe", "North"),
    ("WP-A2", "water_pipe", "North"),
    ("WP-K1", "water_pipe", "King's Cross"),
    ("PM-A1", "power_meter", "North"),
    ("PM-S1", "power_meter", "South"),
]


def write_registry(path: Path) -> Path:
    """REGISTRY as a registry file; device n (from 1) at (30.0n, 120.0n), "n Test Rd"."""
    rows = ["device_id,profile,district,latitude,longitude,address"]
    rows += [
        f"{d},{p},{district},30.{n:02d},120.{n:02d},{n} Test Rd"
        for n, (d, p, district) in enumerate(REGISTRY, start=1)
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


@dataclass
class Seed:
    now: int
    points: list[Point]
    history_base: int
    registry: dict[str, tuple[str, str]] = field(default_factory=dict)

    def of(self, device_id: str) -> list[Point]:
        return [p for p in self.points if p.device_id == device_id]


def seed_points(now: int) -> tuple[list[Point], int]:
    """Readings of REGISTRY's devices (and one unregistered) relative to `now`, and the hour
    SL-H1's dense history starts at."""

    def sl(device: str, district: str, ago: int, **values: Scalar) -> Point:
        return Point("streetlight", device, district, values, now - ago)

    def wp(device: str, district: str, ago: int, **values: Scalar) -> Point:
        return Point("water_pipe", device, district, values, now - ago)

    points = [
        sl("SL-A1", "North", 50 * MIN, powerState="off", powerConsumption=2.0),
        sl("SL-A1", "North", 20 * MIN, powerState="on", powerConsumption=120.5),
        sl(
            "SL-A1",
            "North",
            5 * MIN,
            powerState="on",
            powerConsumption=130.25,
            voltage=229.5,
            illuminanceLevel=0.8,
            doorOpen=False,
            status="ok",
        ),
        sl("SL-A2", "North", 15 * MIN, powerState="on", powerConsumption=99.0),
        sl("SL-A2", "North", 10 * MIN, powerState="on"),  # latest reading lacks power
        sl("SL-A4", "North", 3 * HOUR, powerState="on", powerConsumption=200.0),
        sl("SL-K1", "King's Cross", 1 * MIN, powerState="low", powerConsumption=40.5),
        # tagged North but not in the registry: must never count
        sl("SL-GHOST", "North", 2 * MIN, powerState="on", powerConsumption=999.0),
        wp("WP-A1", "North", 7 * MIN, pressure=300.5, flow=-2.5, leakDetected=False),
        wp("WP-A2", "North", 30 * MIN, pressure=500.0, flow=1.0),
        wp("WP-A2", "North", 4 * MIN, pressure=150.0, flow=10.0, rssi=-80),
        wp("WP-K1", "King's Cross", -2 * MIN, pressure=222.0),  # device clock 2 min ahead
        Point(
            "power_meter",
            "PM-A1",
            "North",
            {"activePower": 12.5, "totalActiveEnergyImport": 1234.5},
            now - 12 * MIN,
        ),
    ]
    base = (now - 6 * HOUR) // HOUR * HOUR
    for i in range(120):
        points.append(
            Point(
                "streetlight",
                "SL-H1",
                "North",
                {
                    "powerConsumption": round((i * 7.3) % 50 + 0.25, 2),
                    "powerState": "on" if (i // 7) % 2 == 0 else "off",
                    "voltage": 220.0 + i % 11,
                },
                base + i * MIN,
            )
        )
    return points, base
