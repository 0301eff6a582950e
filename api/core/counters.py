"""Counters (kind: counter in the profile, e.g. kWh imported): deltas and rates per window.

A counter is never averaged or summed: its meaning is in its increase. Each increase between two
consecutive readings belongs to the window of the later reading. A reading lower than the one
before is a reset (meter replaced, register overflow): the counter started again from 0, so the
increase is the new value itself, not a negative number and not nothing (NON_NEGATIVE_DIFFERENCE
would drop the energy counted since the reset).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from api.core.times import NS_PER_S
from api.core.windows import Window

NS_PER_H = 3600 * NS_PER_S


def increases(
    previous: float | None, readings: Sequence[tuple[int, float]]
) -> list[tuple[int, float]]:
    """(time, increase) for each reading that has a predecessor, resets counted from 0."""
    out = []
    last = previous
    for time_ns, value in readings:
        if last is not None:
            out.append((time_ns, value - last if value >= last else value))
        last = value
    return out


def deltas(
    previous: float | None, readings: Sequence[tuple[int, float]], windows: Sequence[Window]
) -> list[float | None]:
    """Increase per window; None for a window without any increase to attribute."""
    starts = [w[0] for w in windows]
    out: list[float | None] = [None] * len(windows)
    for time_ns, increase in increases(previous, readings):
        i = bisect.bisect_right(starts, time_ns) - 1
        if i >= 0 and time_ns < windows[i][1]:
            out[i] = (out[i] or 0.0) + increase
    return out


def rate_per_hour(delta: float, window: Window, start_ns: int, end_ns: int) -> float:
    """Average increase per hour over the part of the window inside [start, end)."""
    covered = min(window[1], end_ns) - max(window[0], start_ns)
    return delta / (covered / NS_PER_H)
