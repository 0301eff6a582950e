"""The foresight scenario: one district over weeks, with phenomena whose ground truth is known.

    scenario = Scenario.build(ScenarioSpec(days=28))
    scenario.registry_rows()        # the district's devices, for the registry CSV
    scenario.messages(layout)       # the back-dated uploads, in sending order (SimMessage)
    scenario.truth                  # what was injected, as JSON-ready data

Water nodes start leaking on a given night with a given size (a share of the district's minimum
night flow) or burst for a few hours; lamps burn by day, stay dark at night, draw power while
off, or their driver fails (power creeping up day by day); meters follow the day, the week, the
weather and holidays. Devices with data-quality faults get a stuck sensor, a slow clock, gaps,
invalid readings (dead-lettered by ingest) or a backlog not yet uploaded. Each fault hits a device
of its own, so a signal is never judged on a device another fault disturbs.

Every device reports on one interval (15 min by default) and uploads an hour of readings in one
array message, as a battery node does; timestamps are epoch milliseconds.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import orjson

from simulators.curves import WATER_DEMAND
from simulators.fleet import ExpectedReading, SimMessage
from simulators.phenomena import (
    MS_PER_DAY,
    Calendar,
    Lamp,
    LampFaults,
    Meter,
    Values,
    WaterNode,
    holidays,
    weather,
)
from wire.topics import TopicLayout

OUT_OF_RANGE = "out_of_range"
# A value outside each profile's range, for the readings an `invalid` device garbles.
GARBLED = {"water_pipe": ("pressure", 9999.0), "streetlight": ("powerConsumption", 5000.0)}
GARBLED_DEFAULT = ("activePower", 5000.0)


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    days: int = 28
    water: int = 20
    lamps: int = 50
    meters: int = 20
    interval_s: int = 900
    per_message: int = 4  # readings per upload
    seed: int = 1
    district: str = "Foresight"
    latitude: float = 30.2741  # Hangzhou
    longitude: float = 120.1551
    timezone: str = "Asia/Shanghai"
    end_ms: int | None = None  # default: the city's last midnight

    def check(self) -> None:
        if self.days < 10:
            raise ValueError("a scenario needs at least 10 days: a week of baseline, then faults")
        if min(self.water, self.meters) < 6 or self.lamps < 12:
            raise ValueError("a scenario needs at least 6 water nodes, 12 lamps and 6 meters")
        if not 60 <= self.interval_s <= 3600 or 3600 % self.interval_s:
            raise ValueError("interval_s must divide an hour, from 60 s")


class _Model(Protocol):
    def sample(self, ts_ms: int, calendar: Calendar) -> Values: ...


@dataclass(slots=True)
class SimDevice:
    device_id: str
    profile: str
    latitude: float
    longitude: float
    model: _Model
    phase_ms: int
    rng: random.Random
    # Data-quality faults.
    stuck_from_ms: int | None = None
    clock_slow_s_per_day: float = 0.0
    loss: float = 0.0
    invalid: float = 0.0
    silent_from_ms: int | None = None
    stuck_values: Values | None = None


@dataclass
class Scenario:
    spec: ScenarioSpec
    start_ms: int
    end_ms: int
    calendar: Calendar
    devices: list[SimDevice]
    truth: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, spec: ScenarioSpec) -> Scenario:
        spec.check()
        zone = ZoneInfo(spec.timezone)
        rng = random.Random(spec.seed)  # noqa: S311 - a simulation, not security
        end = _last_midnight(zone, spec.end_ms)
        first = (end - timedelta(days=spec.days)).date()
        start_ms = int((end - timedelta(days=spec.days)).timestamp() * 1000)
        calendar = Calendar(
            zone, start_ms, weather(spec.days, rng), holidays(first, spec.days, rng)
        )
        scenario = cls(spec, start_ms, int(end.timestamp() * 1000), calendar, [])
        scenario.truth = {
            "district": spec.district,
            "timezone": spec.timezone,
            "latitude": spec.latitude,
            "longitude": spec.longitude,
            "start": _iso(start_ms, zone),
            "end": _iso(scenario.end_ms, zone),
            "days": spec.days,
            "interval_s": spec.interval_s,
            "seed": spec.seed,
            "holidays": sorted(d.isoformat() for d in calendar.holidays),
            "temperature_c": list(calendar.temperature_c),
        }
        _Builder(scenario, rng).build()
        return scenario

    def day_ms(self, day: int) -> int:
        """Epoch ms of local midnight starting day `day` of the scenario."""
        first = datetime.fromtimestamp(self.start_ms / 1000, self.calendar.zone)
        return int((first + timedelta(days=day)).timestamp() * 1000)

    def date_of(self, day: int) -> date:
        return (datetime.fromtimestamp(self.start_ms / 1000, self.calendar.zone)).date() + (
            timedelta(days=day)
        )

    def registry_rows(self) -> list[dict[str, str]]:
        return [
            {
                "device_id": d.device_id,
                "profile": d.profile,
                "district": self.spec.district,
                "latitude": f"{d.latitude:.6f}",
                "longitude": f"{d.longitude:.6f}",
                "address": f"{n + 1} Foresight Rd",
            }
            for n, d in enumerate(self.devices)
        ]

    def readings_per_device(self) -> int:
        return self.spec.days * 86_400 // self.spec.interval_s

    def messages(self, layout: TopicLayout) -> Iterator[SimMessage]:
        """Every device's uploads, hour by hour across the fleet."""
        per, count = self.spec.per_message, self.readings_per_device()
        interval_ms = self.spec.interval_s * 1000
        for first in range(0, count, per):
            for device in self.devices:
                ks = range(first, min(first + per, count))
                message = _upload(device, ks, self, interval_ms, layout)
                if message is not None:
                    yield message


def _upload(
    device: SimDevice, ks: range, scenario: Scenario, interval_ms: int, layout: TopicLayout
) -> SimMessage | None:
    documents: list[dict[str, object]] = []
    expected: list[ExpectedReading] = []
    rejections: list[str] = []
    for k in ks:
        true_ms = scenario.start_ms + device.phase_ms + k * interval_ms
        true_ms += device.rng.randint(-1000, 1000)  # a device's timer wanders a little
        if device.silent_from_ms is not None and true_ms >= device.silent_from_ms:
            return None  # the backlog the device has not uploaded yet
        values = _values(device, true_ms, scenario.calendar)
        if device.loss and device.rng.random() < device.loss:
            continue
        stamp = true_ms - round(device.clock_slow_s_per_day * 1000 * (k * interval_ms) / MS_PER_DAY)
        document: dict[str, object] = {"ts": stamp, **values}
        if device.invalid and device.rng.random() < device.invalid:
            name, bad = GARBLED.get(device.profile, GARBLED_DEFAULT)
            document[name] = bad
            rejections.append(OUT_OF_RANGE)
        else:
            reading = ExpectedReading(device.profile, device.device_id, stamp * 10**6, values)
            expected.append(reading)
        documents.append(document)
    if not documents:
        return None
    topic = layout.telemetry(device.profile, device.device_id)
    due = int(documents[-1]["ts"])  # type: ignore[call-overload]
    return SimMessage(topic, orjson.dumps(documents), tuple(expected), tuple(rejections), None, due)


def _values(device: SimDevice, true_ms: int, calendar: Calendar) -> Values:
    if device.stuck_from_ms is not None and true_ms >= device.stuck_from_ms:
        if device.stuck_values is None:
            device.stuck_values = device.model.sample(true_ms, calendar)
        return dict(device.stuck_values)
    return device.model.sample(true_ms, calendar)


class _Builder:
    """Draws the fleet and assigns each fault to devices of its own."""

    def __init__(self, scenario: Scenario, rng: random.Random) -> None:
        self.s = scenario
        self.rng = rng
        self.spec = scenario.spec

    def _place(self) -> tuple[float, float]:
        spread = 0.01  # about a kilometre: one district
        return (
            self.spec.latitude + self.rng.uniform(-spread, spread),
            self.spec.longitude + self.rng.uniform(-spread, spread),
        )

    def _device(self, prefix: str, profile: str, n: int, model: _Model) -> SimDevice:
        lat, lon = self._place()
        seed = f"{self.spec.seed}:{prefix}:{n}"
        phase = self.rng.randrange(0, self.spec.interval_s * 1000 // 3)
        return SimDevice(
            f"{prefix}-F{n + 1:03d}",
            profile,
            lat,
            lon,
            model,
            phase,
            random.Random(seed),  # noqa: S311
        )

    def build(self) -> None:
        water = [self._water(n) for n in range(self.spec.water)]
        lamps = [self._lamp(n) for n in range(self.spec.lamps)]
        meters = [self._meter(n) for n in range(self.spec.meters)]
        self.s.devices = [*water, *lamps, *meters]
        self.s.truth["quality_faults"] = []
        self._water_faults(water)
        self._lamp_faults(lamps)
        self._meter_faults(meters)
        self.s.truth["devices"] = {
            "water_pipe": len(water),
            "streetlight": len(lamps),
            "power_meter": len(meters),
        }

    def _water(self, n: int) -> SimDevice:
        node = WaterNode(
            mean_flow=self.rng.uniform(5.0, 60.0),
            static_kpa=self.rng.uniform(420.0, 560.0),
            head_loss_kpa=self.rng.uniform(120.0, 220.0),
            rng=random.Random(f"{self.spec.seed}:water:{n}"),  # noqa: S311
        )
        return self._device("WP", "water_pipe", n, node)

    def _lamp(self, n: int) -> SimDevice:
        lat, lon = self._place()
        lamp = Lamp(
            latitude=lat,
            longitude=lon,
            rated_w=self.rng.uniform(40.0, 200.0),
            standby_w=self.rng.uniform(1.0, 3.0),
            rng=random.Random(f"{self.spec.seed}:lamp:{n}"),  # noqa: S311
        )
        device = self._device("SL", "streetlight", n, lamp)
        device.latitude, device.longitude = lat, lon
        return device

    def _meter(self, n: int) -> SimDevice:
        commercial = n % 3 == 0
        meter = Meter(
            peak_kw=self.rng.uniform(20.0, 120.0) if commercial else self.rng.uniform(4.0, 15.0),
            commercial=commercial,
            energy_kwh=self.rng.uniform(100.0, 50_000.0),
            rng=random.Random(f"{self.spec.seed}:meter:{n}"),  # noqa: S311
        )
        return self._device("PM", "power_meter", n, meter)

    def _take(self, pool: list[SimDevice], share: float, minimum: int = 1) -> list[SimDevice]:
        count = max(minimum, round(len(pool) * share))
        if count > len(pool):
            raise ValueError("too few devices for the faults the scenario injects")
        taken = pool[:count]
        del pool[:count]
        return taken

    def _water_faults(self, water: list[SimDevice]) -> None:
        pool = water[:]
        self.rng.shuffle(pool)
        night_flow = sum(d.model.mean_flow for d in water if isinstance(d.model, WaterNode)) * min(
            WATER_DEMAND.table
        )
        self.s.truth["district_night_flow_m3h"] = round(night_flow, 2)
        leaks = []
        for device in self._take(pool, 0.4):
            node = device.model
            assert isinstance(node, WaterNode)
            night = self.rng.randint(8, self.spec.days - 3)
            # The leak opens in the evening before its first night's 02:00-04:00 window.
            node.leak_from_ms = self.s.day_ms(night) - self.rng.randint(60, 180) * 60_000
            share = self.rng.uniform(0.02, 0.06)
            node.leak_m3h = share * night_flow
            leaks.append(
                {
                    "device_id": device.device_id,
                    "start_night": self.s.date_of(night).isoformat(),
                    "start": _iso(node.leak_from_ms, self.s.calendar.zone),
                    "size_m3h": round(node.leak_m3h, 3),
                    "share_of_night_flow": round(share, 4),
                }
            )
        self.s.truth["leaks"] = leaks
        bursts = []
        for device in self._take(pool, 0.1):
            node = device.model
            assert isinstance(node, WaterNode)
            day = self.rng.randint(8, self.spec.days - 1)
            start = self.s.day_ms(day) + self.rng.randint(9, 15) * 3_600_000
            end = start + self.rng.randint(2, 5) * 3_600_000
            size, drop = node.mean_flow * self.rng.uniform(0.6, 1.0), self.rng.uniform(60, 120)
            node.bursts.append((start, end, size, drop))
            bursts.append(
                {
                    "device_id": device.device_id,
                    "start": _iso(start, self.s.calendar.zone),
                    "end": _iso(end, self.s.calendar.zone),
                    "flow_m3h": round(size, 2),
                    "pressure_drop_kpa": round(drop, 1),
                }
            )
        self.s.truth["bursts"] = bursts
        self._quality(pool, "stuck")
        self._quality(pool, "invalid")

    def _span(self, days: tuple[int, int], first: int = 1) -> tuple[int, int, int, int]:
        start = self.rng.randint(first, self.spec.days - 3)
        end = min(self.spec.days, start + self.rng.randint(*days))
        return start, end, self.s.day_ms(start), self.s.day_ms(end)

    def _lamp_span(self, device: SimDevice, days: tuple[int, int]) -> dict[str, Any]:
        start, end, _, _ = self._span(days)
        return {
            "device_id": device.device_id,
            "from": self.s.date_of(start).isoformat(),
            "until": self.s.date_of(end).isoformat(),
        }

    def _lamp_faults(self, lamps: list[SimDevice]) -> None:
        pool = lamps[:]
        self.rng.shuffle(pool)
        kinds: dict[str, list[dict[str, Any]]] = {}
        for kind, share in (
            ("burning_by_day", 0.1),
            ("dark_at_night", 0.06),
            ("power_while_off", 0.06),
        ):
            kinds[kind] = []
            for device in self._take(pool, share):
                record = self._lamp_span(device, (2, 6))
                span = (self._ms(record["from"]), self._ms(record["until"]))
                lamp = device.model
                assert isinstance(lamp, Lamp)
                if kind == "burning_by_day":
                    lamp.faults = LampFaults(burning_by_day=span)
                elif kind == "dark_at_night":
                    lamp.faults = LampFaults(dark_at_night=span)
                else:
                    watts = self.rng.uniform(12.0, 30.0)
                    lamp.faults = LampFaults(power_while_off=span, power_off_w=watts)
                    record["power_w"] = round(watts, 1)
                kinds[kind].append(record)
        kinds["failing_drivers"] = self._drivers(pool)
        self.s.truth["lamps"] = kinds
        self._quality(pool, "gaps")
        self._quality(pool, "clock_drift")

    def _drivers(self, pool: list[SimDevice]) -> list[dict[str, Any]]:
        if self.spec.days < 12:
            return []
        out = []
        for device in self._take(pool, 0.06):
            day = self.rng.randint(7, max(7, self.spec.days - 8))
            creep = self.rng.uniform(0.02, 0.04)
            lamp = device.model
            assert isinstance(lamp, Lamp)
            lamp.faults = LampFaults(driver_from_ms=self.s.day_ms(day), driver_creep_per_day=creep)
            out.append(
                {
                    "device_id": device.device_id,
                    "from": self.s.date_of(day).isoformat(),
                    "creep_per_day": round(creep, 4),
                }
            )
        return out

    def _meter_faults(self, meters: list[SimDevice]) -> None:
        pool = meters[:]
        self.rng.shuffle(pool)
        for kind in ("stuck", "lagging", "clock_drift"):
            self._quality(pool, kind)

    def _ms(self, iso_date: str) -> int:
        moment = datetime.combine(date.fromisoformat(iso_date), datetime.min.time())
        return int(moment.replace(tzinfo=self.s.calendar.zone).timestamp() * 1000)

    def _quality(self, pool: list[SimDevice], kind: str) -> None:
        (device,) = self._take(pool, 0.0)
        record: dict[str, Any] = {"device_id": device.device_id, "fault": kind}
        if kind == "stuck":
            device.stuck_from_ms = self.s.day_ms(self.spec.days // 2)
            record["from"] = _iso(device.stuck_from_ms, self.s.calendar.zone)
        elif kind == "clock_drift":
            device.clock_slow_s_per_day = self.rng.uniform(120.0, 300.0)
            record["slow_s_per_day"] = round(device.clock_slow_s_per_day, 1)
        elif kind == "gaps":
            device.loss = 0.35
            record["loss"] = device.loss
        elif kind == "invalid":
            device.invalid = 0.2
            record["invalid_share"] = device.invalid
        elif kind == "lagging":
            device.silent_from_ms = self.s.end_ms - 9 * 3_600_000
            record["behind_hours"] = 9
        self.s.truth["quality_faults"].append(record)


def _last_midnight(zone: ZoneInfo, end_ms: int | None) -> datetime:
    now = datetime.now(zone) if end_ms is None else datetime.fromtimestamp(end_ms / 1000, zone)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def _iso(ts_ms: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, zone).isoformat(timespec="seconds")


_INTERVAL = re.compile(r"^reporting_interval:.*$", re.MULTILINE)


def write_profiles(source: Path, target: Path, interval_s: int) -> Path:
    """The profiles of `source` in `target`, every reporting interval set to the scenario's, so
    completeness is judged against the interval the devices really report on."""
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.yaml")):
        text = _INTERVAL.sub(f"reporting_interval: {interval_s}s", path.read_text())
        (target / path.name).write_text(text)
    return target
