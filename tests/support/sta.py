"""A small city for the SensorThings tests: a registry (with a vendor-variant device), a day of
readings at 5-minute steps for a few devices, and the expectations the tests compute from them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from api.main import create_app
from citysense.servers import LocalServers
from common.influx import InfluxClient, InfluxConfig
from tests.support.api import api_settings, write_tokens
from tests.support.influx import make_database
from tests.support.screen import serve
from tests.support.seeding import Point, line_protocol
from tests.support.times import MIN, S

# device_id, profile, district, latitude, longitude, variant
DEVICES = [
    ("SL-1", "streetlight", "North", 30.10, 120.10, ""),
    ("SL-2", "streetlight", "North", 30.20, 120.20, "lumio"),
    ("SL-3", "streetlight", "South", 30.30, 120.30, ""),
    ("WP-1", "water_pipe", "North", 30.40, 120.40, ""),
    ("WP-2", "water_pipe", "South", 30.50, 120.50, ""),
    ("PM-1", "power_meter", "North", 30.60, 120.60, ""),
]
STEP = 5 * MIN
STEPS = 288  # a day


def registry_text() -> str:
    rows = ["device_id,profile,district,latitude,longitude,address,variant"]
    rows += [
        f"{d},{p},{district},{lat:.2f},{lon:.2f},{n} Sensor St,{variant}"
        for n, (d, p, district, lat, lon, variant) in enumerate(DEVICES, start=1)
    ]
    return "\n".join(rows) + "\n"


def day_points(start: int) -> list[Point]:
    """A day of readings from `start`: SL-1 and SL-2 every step (power, state), WP-1 every
    step (pressure, flag), SL-3 and PM-1 once, WP-2 never."""
    points = []
    for i in range(STEPS):
        t = start + i * STEP
        state = "on" if (i // 12) % 2 == 0 else "off"
        points.append(
            Point(
                "streetlight",
                "SL-1",
                "North",
                {"powerConsumption": float(i % 100) + 0.5, "powerState": state},
                t,
            )
        )
        points.append(Point("streetlight", "SL-2", "North", {"powerConsumption": 50.0 + i}, t))
        points.append(
            Point(
                "water_pipe",
                "WP-1",
                "North",
                {"pressure": 200.0 + (i % 50), "leakDetected": i % 30 == 0},
                t,
            )
        )
    points.append(Point("streetlight", "SL-3", "South", {"voltage": 230.0}, start + STEP))
    points.append(Point("power_meter", "PM-1", "North", {"activePower": 3.5}, start + 2 * STEP))
    return points


@dataclass(frozen=True)
class StaCity:
    url: str  # the API's base URL
    start: int  # the first reading's time, ns
    points: list[Point]

    @property
    def root(self) -> str:
        return f"{self.url}/sta/v1.1"

    def series(self, device_id: str, field: str) -> list[tuple[int, object]]:
        return sorted(
            (p.time_ns, p.fields[field])
            for p in self.points
            if p.device_id == device_id and field in p.fields
        )


@contextmanager
def sta_city(servers: LocalServers, tmp_path: Path, start: int) -> Iterator[StaCity]:
    """The city seeded into a database of its own, and the API over it served on a port, with
    the tokens of tests.support.api.TOKENS."""
    influx: InfluxConfig = make_database(servers)
    points = day_points(start)
    with InfluxClient(influx) as client:
        client.write(line_protocol(points))
    settings = api_settings(
        servers,
        influx,
        tmp_path,
        registry=registry_text(),
        tokens=write_tokens(tmp_path / "tokens.yaml"),
    )
    with serve(create_app(settings)) as url:
        yield StaCity(url, start, points)


def day_start(now_ns: int) -> int:
    """A day ending about now, on whole seconds."""
    return (now_ns // S) * S - STEPS * STEP
