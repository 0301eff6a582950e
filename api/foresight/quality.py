"""Data quality per device, and per district: one score in 0-1 with its parts, so that the worst
devices can be sent a technician.

- completeness: readings stored against what the profile's interval promises over the window;
- validity: the share of the device's readings not dead-lettered (the dead letters by reason
  are listed beside it);
- stuck: 1 - the share of readings in runs of `STUCK_RUN` or more identical values of one of the
  profile's `stuck_fields` (noisy gauges that never repeat for long on a healthy device);
- clock: from the spacing of its timestamps — a clock that gains or loses shows as intervals
  longer or shorter than the profile's; `CLOCK_TOLERANCE_S` a day is free, `CLOCK_WORST_S` more
  scores 0;
- lag: how far the newest reading is behind the end of the window (beyond two intervals),
  `LAG_WORST_S` scoring 0: a device whose uploads come late or not at all.

The score is the product of the parts: one part at 0 makes the device's data useless, whatever
the others say.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

STUCK_RUN = 4
CLOCK_TOLERANCE_S = 10.0  # per day
CLOCK_WORST_S = 60.0  # per day beyond the tolerance
LAG_WORST_S = 12 * 3600.0
NS = 10**9


@dataclass(frozen=True, slots=True)
class Window:
    start_ns: int
    end_ns: int


@dataclass(frozen=True, slots=True)
class DeviceQuality:
    device_id: str
    profile: str
    district: str
    score: float
    completeness: float
    validity: float
    stuck: float
    clock: float
    lag: float
    readings: int
    expected: int
    dead_letters: dict[str, int] = field(default_factory=dict)
    clock_drift_s_per_day: float | None = None
    behind_s: float | None = None

    def parts(self) -> dict[str, float]:
        return {
            "completeness": self.completeness,
            "validity": self.validity,
            "stuck": self.stuck,
            "clock": self.clock,
            "lag": self.lag,
        }


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, value))


def stuck_share(values: Sequence[object]) -> float:
    """Share of values inside runs of STUCK_RUN or more identical consecutive values."""
    if not values:
        return 0.0
    stuck, run = 0, 1
    for i in range(1, len(values) + 1):
        if i < len(values) and values[i] == values[i - 1]:
            run += 1
            continue
        if run >= STUCK_RUN:
            stuck += run
        run = 1
    return stuck / len(values)


def clock_drift(times_ns: Sequence[int], interval_s: float) -> float | None:
    """Seconds a day the device's clock gains (+) or loses (-), from the median spacing of its
    consecutive readings (gaps of missing readings left out); None with too few."""
    step = interval_s * NS
    gaps = [b - a for a, b in itertools.pairwise(times_ns) if 0.5 * step < b - a < 1.5 * step]
    if len(gaps) < 8:
        return None
    return (statistics.median(gaps) - step) / step * 86_400


def device_quality(
    device_id: str,
    profile: str,
    district: str,
    *,
    times_ns: Sequence[int],
    stuck_values: Mapping[str, Sequence[object]],
    dead_letters: Mapping[str, int],
    interval_s: float,
    window: Window,
) -> DeviceQuality:
    """`times_ns` sorted; `stuck_values` per stuck field, in time order."""
    expected = max(1, round((window.end_ns - window.start_ns) / (interval_s * NS)))
    readings = len(times_ns)
    rejected = sum(dead_letters.values())
    completeness = _clamp(readings / expected)
    validity = 1.0 if readings + rejected == 0 else readings / (readings + rejected)
    stuck = 1.0 - max((stuck_share(v) for v in stuck_values.values()), default=0.0)
    drift = clock_drift(times_ns, interval_s)
    clock = 1.0 if drift is None else _clamp(1 - (abs(drift) - CLOCK_TOLERANCE_S) / CLOCK_WORST_S)
    behind = None if not times_ns else (window.end_ns - times_ns[-1]) / NS - 2 * interval_s
    lag = 0.0 if behind is None else _clamp(1 - max(0.0, behind) / LAG_WORST_S)
    return DeviceQuality(
        device_id,
        profile,
        district,
        score=completeness * validity * stuck * clock * lag,
        completeness=completeness,
        validity=validity,
        stuck=stuck,
        clock=clock,
        lag=lag,
        readings=readings,
        expected=expected,
        dead_letters=dict(dead_letters),
        clock_drift_s_per_day=drift,
        behind_s=behind,
    )


@dataclass(frozen=True, slots=True)
class DistrictQuality:
    district: str
    devices: int
    score: float  # mean of its devices' scores
    parts: dict[str, float]  # mean of each part
    worst: list[str]  # device ids, worst first (at most WORST)


WORST = 10


def district_quality(devices: Sequence[DeviceQuality]) -> list[DistrictQuality]:
    by: dict[str, list[DeviceQuality]] = {}
    for d in devices:
        by.setdefault(d.district, []).append(d)
    out = []
    for district, group in sorted(by.items()):
        names = group[0].parts().keys()
        ranked = sorted(group, key=lambda d: (d.score, d.device_id))
        out.append(
            DistrictQuality(
                district,
                len(group),
                statistics.fmean(d.score for d in group),
                {n: statistics.fmean(d.parts()[n] for d in group) for n in names},
                [d.device_id for d in ranked[:WORST]],
            )
        )
    return out
