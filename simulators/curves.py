"""Daily shapes of city life (demand, load, traffic, air temperature) as fast lookup tables.

Each curve is a function of the local hour, sampled every 15 minutes once at import and linearly
interpolated, because the fleet generator evaluates several of them per reading and a table
lookup is far cheaper than the exponentials that define them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

STEPS_PER_HOUR = 4
_STEPS = 24 * STEPS_PER_HOUR


def bump(hour: float, center: float, width: float) -> float:
    """A bell of height 1 around `center` (hours) that wraps over midnight."""
    distance = abs(hour - center) % 24.0
    distance = min(distance, 24.0 - distance)
    return math.exp(-0.5 * (distance / width) ** 2)


@dataclass(frozen=True, slots=True)
class DailyCurve:
    table: tuple[float, ...]

    @classmethod
    def of(cls, shape: Callable[[float], float]) -> DailyCurve:
        return cls(tuple(shape(i / STEPS_PER_HOUR) for i in range(_STEPS + 1)))

    def __call__(self, hour: float) -> float:
        position = hour * STEPS_PER_HOUR
        index = int(position)
        low = self.table[index]
        return low + (self.table[index + 1] - low) * (position - index)

    @property
    def minimum_hour(self) -> float:
        return self.table.index(min(self.table)) / STEPS_PER_HOUR


# Water demand relative to the daily mean: lowest 02:00-04:00 (the "minimum night flow" a leak
# raises), a sharp morning peak when the city showers, a broader evening peak that tails off
# towards midnight.
WATER_DEMAND = DailyCurve.of(
    lambda h: (
        0.22
        + 1.15 * bump(h, 7.5, 1.3)
        + 0.55 * bump(h, 12.5, 2.5)
        + 0.35 * bump(h, 15.5, 2.5)
        + 1.0 * bump(h, 19.5, 1.6)
        + 0.25 * bump(h, 23.0, 1.5)
    )
)

# Household electricity: breakfast peak, a small midday one, the big evening peak.
RESIDENTIAL_LOAD = DailyCurve.of(
    lambda h: 0.22 + 0.45 * bump(h, 7.5, 1.0) + 0.2 * bump(h, 13.0, 2.5) + 0.75 * bump(h, 20.0, 1.8)
)

# Shops and offices: business hours with a lunch dip, a little evening trade.
COMMERCIAL_LOAD = DailyCurve.of(
    lambda h: 0.15 + 0.8 * bump(h, 10.5, 2.0) + 0.8 * bump(h, 15.5, 2.2) + 0.25 * bump(h, 20.0, 1.5)
)

# Road traffic (drives street noise and PM2.5): two rush hours.
TRAFFIC = DailyCurve.of(
    lambda h: 0.08 + 0.9 * bump(h, 8.0, 1.2) + 0.45 * bump(h, 13.0, 3.0) + 0.9 * bump(h, 18.0, 1.5)
)

# Air temperature swing: +1 at 15:00, -1 at 03:00.
DIURNAL = DailyCurve.of(lambda h: math.cos(2.0 * math.pi * (h - 15.0) / 24.0))
