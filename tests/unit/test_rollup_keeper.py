"""What the rollup keeper recomputes of a day (api.compute.keeper): the whole day when the day's
own window is due, else only the hours holding the due quarter-hours and hours — an open quarter
must not cost a day of reads — and whole hours where a zone's half-hour offset cuts one; and when
its rounds start: half a minute before each quarter-hour begins (its windows are written before
they begin) and 2 s after (the quarter that ended is computed again, whole, if its marks moved)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from api.compute.keeper import (
    AHEAD_NS,
    ALIGN_NS,
    HOUR_NS,
    QUARTER_NS,
    REFRESH_NS,
    ROUND_OFFSETS,
    _part,
    pause,
    unit_windows,
)
from api.core import rollups as r

DAY0 = 1_700_006_400 * 1_000_000_000  # a UTC midnight


def test_a_day_unit_holds_its_quarters_hours_and_itself() -> None:
    unit = unit_windows((DAY0, DAY0 + 24 * HOUR_NS))
    assert len(unit["15m"]) == 96 and len(unit["1h"]) == 24 and len(unit["day"]) == 1
    (kolkata,) = r.grain_windows(
        "day", DAY0 + HOUR_NS, DAY0 + HOUR_NS + 1, ZoneInfo("Asia/Kolkata")
    )
    unit = unit_windows(kolkata)  # 18:30 to 18:30 UTC: the cut hours are whole
    assert unit["1h"][0][0] == kolkata[0] - 30 * 60 * 1_000_000_000
    assert unit["1h"][-1][1] == kolkata[1] + 30 * 60 * 1_000_000_000


def test_only_the_hours_holding_due_windows_unless_the_day_is_due() -> None:
    unit = unit_windows((DAY0, DAY0 + 24 * HOUR_NS))
    assert _part(unit, {"15m": [], "1h": [], "day": []}) is None
    quarter = (DAY0 + 13 * HOUR_NS + QUARTER_NS, DAY0 + 13 * HOUR_NS + 2 * QUARTER_NS)
    part = _part(unit, {"15m": [quarter], "1h": [], "day": []})
    assert part is not None
    assert part["1h"] == [(DAY0 + 13 * HOUR_NS, DAY0 + 14 * HOUR_NS)]
    assert len(part["15m"]) == 4 and quarter in part["15m"]
    assert "day" not in part
    assert _part(unit, {"15m": [quarter], "1h": [], "day": unit["day"]}) == unit


def test_rounds_start_just_before_and_just_after_each_quarter_hour_begins() -> None:
    s = 1_000_000_000
    boundary = DAY0 + 13 * HOUR_NS  # a quarter-hour begins
    after = boundary + ALIGN_NS
    before = boundary + QUARTER_NS - AHEAD_NS // 2  # the next one begins in AHEAD_NS / 2
    # Far from both: every `every` seconds.
    assert pause(after + 100 * s, after + 101 * s, 5.0) == 5.0
    # Nearer the next moment than `every`: exactly at it.
    assert pause(before - 4 * s, before - 3 * s, 5.0) == 3.0
    assert pause(boundary + 899 * s, boundary + 900 * s, 5.0) == 2.0
    # A moment passed while the round ran: the next round at once.
    assert pause(after - 3 * s, after + 1 * s, 5.0) == 0.0
    assert pause(before - 1 * s, before + 1 * s, 5.0) == 0.0
    assert pause(after - 600 * s, after + 300 * s, 5.0) == 0.0
    # A round that began at the moment itself does not repeat at once.
    assert pause(after, after + 1 * s, 5.0) == 5.0
    assert pause(before, before + 1 * s, 60.0) == 19.0  # then 10 s before the boundary
    refresh = boundary + QUARTER_NS - REFRESH_NS
    assert pause(refresh, refresh + 1 * s, 60.0) == 11.0  # then 2 s after the boundary
    assert pause(refresh - 1 * s, refresh + 1 * s, 5.0) == 0.0
    assert ROUND_OFFSETS == (ALIGN_NS, QUARTER_NS - AHEAD_NS // 2, QUARTER_NS - REFRESH_NS)
