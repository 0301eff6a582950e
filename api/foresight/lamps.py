"""Lamps judged against the sun at their own pole: sunrise and sunset from astral (the pole's
latitude and longitude, the city's time zone), with a margin either side so that a lamp switched
by a correct photocell or astronomical clock — a few minutes off the exact instant — is never
blamed.

Per lamp and local date: the share of daylight readings lit (burning by day), the share of the
following night's readings dark (dark at night), the median power drawn while switched off, and
the median full power at night, from which `drift` compares each lamp with its own first week
and with its district peers (a failing driver creeps away from them).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from astral import Observer
from astral.sun import sun

MARGIN_NS = 30 * 60 * 10**9  # 30 min: switching a few minutes off the sun is correct
LIT = frozenset({"on", "low", "bootingUp"})
FULL = "on"
DRIFT_BASELINE_NIGHTS = 7
MIN_READINGS = 4


@dataclass(frozen=True, slots=True)
class LampReading:
    time_ns: int
    state: str | None
    power: float | None


@dataclass(frozen=True, slots=True)
class LampDay:
    device_id: str
    day: date
    lit_by_day: float | None  # share of daylight readings lit
    dark_by_night: float | None  # share of the night's readings (sunset of `day` on) dark
    power_while_off: float | None  # median W while off, over the day and the night
    full_power: float | None  # median W at full power during the night


@lru_cache(maxsize=4096)  # poles x days of a round; bounded all the same
def sun_ns(latitude: float, longitude: float, day: date, zone: str) -> tuple[int, int]:
    """Sunrise and sunset of a local date at a place, epoch ns."""
    times = sun(Observer(latitude, longitude), date=day, tzinfo=ZoneInfo(zone))
    return int(times["sunrise"].timestamp() * 1e9), int(times["sunset"].timestamp() * 1e9)


def _share(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if len(flags) >= MIN_READINGS else None


def lamp_days(
    device_id: str,
    readings: Iterable[LampReading],
    latitude: float,
    longitude: float,
    zone: str,
) -> list[LampDay]:
    """One LampDay per local date the lamp has readings on."""
    tz = ZoneInfo(zone)
    day_flags: defaultdict[date, list[bool]] = defaultdict(list)
    night_flags: defaultdict[date, list[bool]] = defaultdict(list)
    off_power: defaultdict[date, list[float]] = defaultdict(list)
    full_power: defaultdict[date, list[float]] = defaultdict(list)
    for r in readings:
        if r.state is None:
            continue
        local = datetime.fromtimestamp(r.time_ns / 1e9, tz).date()
        sunrise, sunset = sun_ns(latitude, longitude, local, zone)
        lit = r.state in LIT
        # Before today's sunrise, the reading belongs to the night that began yesterday.
        night_of = local - timedelta(days=1) if r.time_ns < sunrise else local
        if sunrise + MARGIN_NS <= r.time_ns <= sunset - MARGIN_NS:
            day_flags[local].append(lit)
        elif r.time_ns >= sunset + MARGIN_NS or r.time_ns <= sunrise - MARGIN_NS:
            night_flags[night_of].append(not lit)
            if r.state == FULL and r.power is not None:
                full_power[night_of].append(r.power)
        if not lit and r.power is not None:
            off_power[local].append(r.power)
    days = sorted(set(day_flags) | set(night_flags))
    return [
        LampDay(
            device_id,
            d,
            _share(day_flags[d]),
            _share(night_flags[d]),
            statistics.median(off_power[d]) if len(off_power[d]) >= MIN_READINGS else None,
            statistics.median(full_power[d]) if len(full_power[d]) >= MIN_READINGS else None,
        )
        for d in days
    ]


def drift(days: list[LampDay]) -> dict[tuple[str, date], float]:
    """Per (lamp, night): how far its full power moved from its first week's, beyond how far
    its peers' moved, as |ratio / peers' median ratio - 1|."""
    by_lamp: defaultdict[str, list[LampDay]] = defaultdict(list)
    for d in days:
        if d.full_power is not None:
            by_lamp[d.device_id].append(d)
    ratios: dict[tuple[str, date], float] = {}
    for device_id, lamp in by_lamp.items():
        lamp.sort(key=lambda d: d.day)
        first = [d.full_power for d in lamp[:DRIFT_BASELINE_NIGHTS] if d.full_power]
        if len(first) < MIN_READINGS:
            continue
        reference = statistics.median(first)
        for d in lamp:
            if d.full_power is not None and reference > 0:
                ratios[(device_id, d.day)] = d.full_power / reference
    peers: defaultdict[date, list[float]] = defaultdict(list)
    for (_, night), ratio in ratios.items():
        peers[night].append(ratio)
    return {
        key: abs(ratio / statistics.median(peers[key[1]]) - 1.0)
        for key, ratio in ratios.items()
        if len(peers[key[1]]) >= 3
    }
