"""Minimum night flow (MNF): the lowest flow of each water node between 02:00 and 04:00 local
time, night by night, and the new leaks it reveals — the water utilities' standard practice: at
night almost nobody draws water, so what still flows is mostly leakage, and a step up that stays
is a new leak.

A node's rise is judged against the median of its previous week's minima and measured as a share
of the district's night flow (the sum of its nodes' minima), so one rule fits big mains and small
ones. A rise above the rule's share (and above four times the node's own night-to-night spread)
two nights running is a leak starting on the first of them; it stays open while the node's
minimum stays above half that rise over the same baseline.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

NIGHT_FROM_HOUR, NIGHT_TO_HOUR = 2, 4
BASELINE_NIGHTS = 7
MIN_BASELINE_NIGHTS = 4
CONFIRM_NIGHTS = 2
NOISE_FACTOR = 4.0  # rises within four robust standard deviations are the node's own noise
MAD_TO_SIGMA = 1.4826
STUCK_READINGS = 3


@dataclass(frozen=True, slots=True)
class NightFlow:
    device_id: str
    night: date
    minimum: float  # m3/h
    baseline: float | None  # median of the previous nights' minima (m3/h)
    rise: float | None  # (minimum - baseline) / district night flow
    leak: bool  # a leak is open on this node this night
    leak_start: date | None  # the night it started, while open


def night_minimums(
    rows: Iterable[tuple[str, int, float]], zone: ZoneInfo
) -> dict[str, dict[date, float]]:
    """(device, time_ns, flow) → each device's minimum flow per night (02:00-04:00 local),
    nights of a stuck meter left out."""
    seen: defaultdict[tuple[str, date], list[float]] = defaultdict(list)
    for device_id, time_ns, flow in rows:
        moment = datetime.fromtimestamp(time_ns / 1e9, zone)
        if NIGHT_FROM_HOUR <= moment.hour < NIGHT_TO_HOUR:
            seen[(device_id, moment.date())].append(flow)
    out: defaultdict[str, dict[date, float]] = defaultdict(dict)
    for (device_id, night), flows in seen.items():
        # A meter repeating one value all night is stuck (data quality says so), not a node
        # whose night flow rose: its night says nothing about leaks.
        if len(flows) < STUCK_READINGS or len(set(flows)) > 1:
            out[device_id][night] = min(flows)
    return dict(out)


def district_night_flow(minimums: dict[str, dict[date, float]]) -> dict[date, float]:
    """The district's night flow per night: the sum of its nodes' minima, scaled up by the share
    of nodes missing that night (a stuck or silent meter must not make the district look less
    thirsty); nights with fewer than half the nodes are left out."""
    nights: defaultdict[date, list[float]] = defaultdict(list)
    for per_night in minimums.values():
        for night, value in per_night.items():
            nights[night].append(value)
    nodes = len(minimums)
    return {n: sum(v) * nodes / len(v) for n, v in nights.items() if 2 * len(v) >= nodes}


def _spread(values: list[float]) -> float:
    middle = statistics.median(values)
    return MAD_TO_SIGMA * statistics.median(abs(v - middle) for v in values)


def leaks(
    minimums: dict[str, dict[date, float]], district: dict[date, float], threshold: float
) -> list[NightFlow]:
    """Every node's nights with their rise and whether a leak is open; `threshold` is the rule's
    share of the district's night flow."""
    out: list[NightFlow] = []
    for device_id, per_night in sorted(minimums.items()):
        out.extend(_node(device_id, per_night, district, threshold))
    return out


def _node(
    device_id: str, per_night: dict[date, float], district: dict[date, float], threshold: float
) -> list[NightFlow]:
    nights = sorted(per_night)
    out: list[NightFlow] = []
    open_since: date | None = None
    frozen: tuple[float, float] | None = None  # baseline and the rise that opened the leak
    for i, night in enumerate(nights):
        previous = nights[max(0, i - BASELINE_NIGHTS) : i]
        value = per_night[night]
        if len(previous) < MIN_BASELINE_NIGHTS:
            out.append(NightFlow(device_id, night, value, None, None, False, None))
            continue
        flows = [per_night[n] for n in previous]
        scale = statistics.median([district[n] for n in previous if n in district] or [0.0])
        if frozen is not None:
            baseline, opening_rise = frozen
            rise = (value - baseline) / scale if scale else 0.0
            if rise < opening_rise / 2:
                open_since, frozen = None, None
            out.append(
                NightFlow(device_id, night, value, baseline, rise, frozen is not None, open_since)
            )
            continue
        baseline = statistics.median(flows)
        needed = max(threshold * scale, NOISE_FACTOR * _spread(flows))
        rise = (value - baseline) / scale if scale else 0.0
        following = nights[i + 1 : i + CONFIRM_NIGHTS]
        confirmed = (
            bool(scale)
            and len(following) == CONFIRM_NIGHTS - 1
            and all(per_night[n] - baseline > needed for n in (night, *following))
        )
        if confirmed:
            open_since, frozen = night, (baseline, rise)
        out.append(NightFlow(device_id, night, value, baseline, rise, confirmed, open_since))
    return out
