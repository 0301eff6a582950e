"""Time windows of aggregates: fixed widths aligned to the epoch (5m, 15m, 1h, as InfluxDB's
GROUP BY time() makes them), and calendar windows (hour, day, week, month) in an IANA time zone.

Calendar windows are computed here, not by InfluxQL: its tz() clause shifts GROUP BY time()
buckets by one UTC offset, which is wrong on the days a zone changes its offset, and it has no
months at all. A local midnight is converted to UTC by zoneinfo for each window, so a DST day is
23 or 25 hours long, as it is on a wall clock. Weeks start on Monday (ISO 8601).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from api.core.times import NS_PER_S

Window = tuple[int, int]  # [start, end) in ns


class Calendar(StrEnum):
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


def zone(name: str) -> ZoneInfo:
    """The IANA zone; ValueError saying what is wrong."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA time zone {name!r}, e.g. UTC or Asia/Shanghai") from exc


def _ns(moment: datetime) -> int:
    return round(moment.timestamp()) * NS_PER_S


def _floor(moment: datetime, unit: Calendar) -> datetime:
    if unit is Calendar.HOUR:
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0, fold=0)
    if unit is Calendar.WEEK:
        day -= timedelta(days=day.weekday())
    elif unit is Calendar.MONTH:
        day = day.replace(day=1)
    return day


def _next(local: datetime, unit: Calendar, tz: ZoneInfo) -> datetime:
    if unit is Calendar.HOUR:
        # Absolute hours: a DST change repeats or skips a wall-clock hour, never a real one.
        return datetime.fromtimestamp(local.timestamp() + 3600, tz)
    if unit is Calendar.MONTH:
        year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
        return datetime(year, month, 1, tzinfo=tz)
    days = 7 if unit is Calendar.WEEK else 1
    date = local.date() + timedelta(days=days)
    return datetime(date.year, date.month, date.day, tzinfo=tz)


def calendar_windows(start_ns: int, end_ns: int, unit: Calendar, tz: ZoneInfo) -> list[Window]:
    """Calendar windows overlapping [start, end), each [window start, window end)."""
    out: list[Window] = []
    local = _floor(datetime.fromtimestamp(start_ns // NS_PER_S, tz), unit)
    while (begin := _ns(local)) < end_ns:
        following = _next(local, unit, tz)
        out.append((begin, _ns(following)))
        local = following
    return out


def fixed_windows(start_ns: int, end_ns: int, every_ns: int) -> list[Window]:
    """Epoch-aligned windows of `every` overlapping [start, end), like GROUP BY time()."""
    first = start_ns // every_ns * every_ns
    return [(t, t + every_ns) for t in range(first, end_ns, every_ns)]


def count_calendar_windows(start_ns: int, end_ns: int, unit: Calendar) -> int:
    """An upper bound, cheap enough to check before building a list of them."""
    seconds = {Calendar.HOUR: 3600, Calendar.DAY: 82800, Calendar.WEEK: 7 * 82800}.get(
        unit, 28 * 86400
    )
    return (end_ns - start_ns) // (seconds * NS_PER_S) + 2


def fixed_grid(windows: Sequence[Window]) -> tuple[int, int] | None:
    """(width, offset) in seconds if the windows are consecutive, all of one whole-second width,
    and so the buckets of GROUP BY time(width, offset); else None. Calendar windows mostly are:
    hours in any zone, days in a zone without DST (or in a year's stretch without a change), so
    they can be asked for in one statement instead of one per window."""
    if not windows:
        return None
    width = windows[0][1] - windows[0][0]
    if width <= 0 or width % NS_PER_S or windows[0][0] % NS_PER_S:
        return None
    if any(e - b != width for b, e in windows) or any(
        end != following for (_, end), (following, _) in itertools.pairwise(windows)
    ):
        return None
    seconds = width // NS_PER_S
    return seconds, windows[0][0] // NS_PER_S % seconds
