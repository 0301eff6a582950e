"""What the foresight scenario's devices measure, faults and all: water nodes that start leaking
or burst, lamps switched at sunset and sunrise (astral) that burn by day, stay dark, draw power
while off or whose driver fails, meters whose demand follows the day, the week, the weather and
holidays. Each model takes the true instant and gives the values; the device's clock and its
uploads are the scenario's business (simulators.scenario).

Sizes are drawn by the scenario and recorded there as ground truth; these models only apply them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from astral import Observer
from astral.sun import sun

from simulators.curves import COMMERCIAL_LOAD, RESIDENTIAL_LOAD, WATER_DEMAND

Values = dict[str, float | int | bool | str]
MS_PER_DAY = 86_400_000


@dataclass(frozen=True, slots=True)
class Calendar:
    """The city's days: local dates, weather (daily mean air temperature) and holidays."""

    zone: ZoneInfo
    start_ms: int
    temperature_c: tuple[float, ...]  # one per day of the scenario
    holidays: frozenset[date]

    def local(self, ts_ms: int) -> datetime:
        return datetime.fromtimestamp(ts_ms / 1000, self.zone)

    def day_index(self, ts_ms: int) -> int:
        return (ts_ms - self.start_ms) // MS_PER_DAY

    def temperature(self, ts_ms: int) -> float:
        index = min(max(self.day_index(ts_ms), 0), len(self.temperature_c) - 1)
        return self.temperature_c[index]

    def rest_day(self, moment: datetime) -> bool:
        """Sundays and holidays: the city sleeps in."""
        return moment.weekday() == 6 or moment.date() in self.holidays


@dataclass(slots=True)
class WaterNode:
    mean_flow: float  # m3/h
    static_kpa: float
    head_loss_kpa: float
    rng: random.Random
    leak_from_ms: int | None = None
    leak_m3h: float = 0.0
    bursts: list[tuple[int, int, float, float]] = field(default_factory=list)  # from, to, m3/h, kPa

    def sample(self, ts_ms: int, calendar: Calendar) -> Values:
        moment = calendar.local(ts_ms)
        hour = moment.hour + moment.minute / 60
        demand = WATER_DEMAND(hour)
        if calendar.rest_day(moment) and hour >= 5:
            # The day starts an hour and a half later; the night is the same.
            demand = WATER_DEMAND(max(5.0, hour - 1.5))
        # Hot days: more showers and gardens, a little even at night.
        demand *= 1.0 + 0.01 * (calendar.temperature(ts_ms) - 25.0)
        flow = self.mean_flow * demand * (1.0 + 0.04 * (self.rng.random() - 0.5))
        pressure = self.static_kpa - self.head_loss_kpa * (demand / 1.6) ** 2
        leaking = self.leak_from_ms is not None and ts_ms >= self.leak_from_ms
        if leaking:
            flow += self.leak_m3h
            pressure -= 0.3 * self.leak_m3h
        for start, end, burst_m3h, drop_kpa in self.bursts:
            if start <= ts_ms < end:
                flow += burst_m3h
                pressure -= drop_kpa
        pressure += 4.0 * (self.rng.random() - 0.5)
        return {
            "pressure": round(pressure * 10) / 10,
            "flow": round(flow * 100) / 100,
            # The acoustic logger hears a leak on some of its listening windows.
            "leakDetected": leaking and self.rng.random() < 0.3,
        }


@dataclass(frozen=True, slots=True)
class LampFaults:
    """Spans [from, until) in epoch ms of each fault the lamp suffers (None: never)."""

    burning_by_day: tuple[int, int] | None = None
    dark_at_night: tuple[int, int] | None = None
    power_while_off: tuple[int, int] | None = None
    power_off_w: float = 0.0
    driver_from_ms: int | None = None
    driver_creep_per_day: float = 0.0


def _within(span: tuple[int, int] | None, ts_ms: int) -> bool:
    return span is not None and span[0] <= ts_ms < span[1]


@dataclass(slots=True)
class Lamp:
    """Switched on at sunset and off at sunrise at its own coordinates, each a few minutes off
    (the controller's astronomical clock and its photocell), dimmed from 01:00 to 05:00."""

    latitude: float
    longitude: float
    rated_w: float
    standby_w: float
    rng: random.Random
    faults: LampFaults = LampFaults()
    _sun: dict[date, tuple[int, int]] = field(default_factory=dict)

    def sun_ms(self, day: date, zone: ZoneInfo) -> tuple[int, int]:
        """Sunrise and sunset of a local date, epoch ms; a day's worth kept, no more."""
        known = self._sun.get(day)
        if known is None:
            times = sun(Observer(self.latitude, self.longitude), date=day, tzinfo=zone)
            known = (
                int(times["sunrise"].timestamp() * 1000),
                int(times["sunset"].timestamp() * 1000),
            )
            self._sun.clear()
            self._sun[day] = known
        return known

    def scheduled_on(self, ts_ms: int, calendar: Calendar) -> bool:
        moment = calendar.local(ts_ms)
        sunrise, sunset = self.sun_ms(moment.date(), calendar.zone)
        # Each day's switching is a few minutes off, drawn from the lamp's own generator.
        day_rng = random.Random(f"{self.rated_w}:{moment.date().toordinal()}")  # noqa: S311
        on_at = sunset + int(day_rng.uniform(-8, 8) * 60_000)
        off_at = sunrise + int(day_rng.uniform(-8, 8) * 60_000)
        return ts_ms >= on_at or ts_ms < off_at

    def sample(self, ts_ms: int, calendar: Calendar) -> Values:
        faults, rnd = self.faults, self.rng.random
        lit = self.scheduled_on(ts_ms, calendar)
        if _within(faults.burning_by_day, ts_ms):
            lit = True  # a relay welded shut
        if _within(faults.dark_at_night, ts_ms):
            lit = False
        moment = calendar.local(ts_ms)
        dimmed = lit and 1 <= moment.hour < 5
        if lit:
            watts = self.rated_w * (0.5 if dimmed else 1.0)
            if faults.driver_from_ms is not None and ts_ms >= faults.driver_from_ms:
                days = (ts_ms - faults.driver_from_ms) / MS_PER_DAY
                watts *= 1.0 + faults.driver_creep_per_day * days
            watts *= 1.0 + 0.02 * (rnd() - 0.5)
        elif _within(faults.power_while_off, ts_ms):
            watts = faults.power_off_w * (1.0 + 0.1 * (rnd() - 0.5))
        else:
            watts = self.standby_w * (1.0 + 0.1 * (rnd() - 0.5))
        state = ("low" if dimmed else "on") if lit else "off"
        return {
            "powerState": state,
            "illuminanceLevel": (0.5 if dimmed else 1.0) if lit else 0.0,
            "powerConsumption": round(watts * 10) / 10,
            "voltage": round((226.0 + 3.0 * (rnd() - 0.5)) * 10) / 10,
        }


@dataclass(slots=True)
class Meter:
    peak_kw: float
    commercial: bool
    energy_kwh: float
    rng: random.Random
    last_ms: int | None = None

    def sample(self, ts_ms: int, calendar: Calendar) -> Values:
        moment = calendar.local(ts_ms)
        hour = moment.hour + moment.minute / 60
        curve = COMMERCIAL_LOAD if self.commercial else RESIDENTIAL_LOAD
        load = curve(hour)
        rest = calendar.rest_day(moment)
        if self.commercial:
            load *= 0.45 if rest else 0.75 if moment.weekday() == 5 else 1.0
        elif rest or moment.weekday() == 5:
            load *= 1.12  # people at home
        # Air conditioning on hot days.
        load *= 1.0 + 0.05 * max(0.0, calendar.temperature(ts_ms) - 24.0)
        kw = self.peak_kw * load * (1.0 + 0.1 * (self.rng.random() - 0.5))
        if self.last_ms is not None:
            self.energy_kwh += kw * (ts_ms - self.last_ms) / 3_600_000
        self.last_ms = ts_ms
        return {
            "activePower": round(kw * 1000) / 1000,
            "voltageL1": round((229.0 - 3.0 * load + 1.6 * (self.rng.random() - 0.5)) * 10) / 10,
            "totalActiveEnergyImport": round(self.energy_kwh * 1000) / 1000,
        }


def weather(days: int, rng: random.Random) -> tuple[float, ...]:
    """Daily mean air temperature: a mean-reverting walk around a warm month's 26 °C."""
    temperature, out = 26.0, []
    for _ in range(days):
        temperature += 0.3 * (26.0 - temperature) + rng.gauss(0.0, 1.5)
        out.append(round(temperature, 1))
    return tuple(out)


def holidays(first: date, days: int, rng: random.Random) -> frozenset[date]:
    """One or two public holidays on weekdays of the month."""
    weekdays = [
        first + timedelta(days=n)
        for n in range(7, days)
        if (first + timedelta(days=n)).weekday() < 5
    ]
    return frozenset(rng.sample(weekdays, min(len(weekdays), 2 if days >= 21 else 1)))
