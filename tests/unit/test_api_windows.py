"""Calendar windows and counter increases: the pure parts of history and aggregation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from api.core.counters import deltas, increases, rate_per_hour
from api.core.times import NS_PER_S, format_rfc3339
from api.core.windows import Calendar, calendar_windows, fixed_grid, fixed_windows, zone

H = 3600 * NS_PER_S


def at(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp()) * NS_PER_S


def test_week_starts_monday_and_month_varies() -> None:
    tz = zone("Asia/Shanghai")
    weeks = calendar_windows(
        at("2024-05-01T12:00:00+08:00"), at("2024-05-08T00:00:00+08:00"), Calendar.WEEK, tz
    )
    assert [format_rfc3339(b) for b, _ in weeks] == ["2024-04-28T16:00:00Z", "2024-05-05T16:00:00Z"]
    months = calendar_windows(
        at("2024-02-10T00:00:00Z"), at("2024-03-02T00:00:00Z"), Calendar.MONTH, tz
    )
    assert [(e - b) // (24 * H) for b, e in months] == [29, 31]  # leap February, then March


def test_fall_back_day_is_25_hours_and_hours_are_real_hours() -> None:
    tz = zone("Europe/Berlin")
    days = calendar_windows(
        at("2024-10-27T00:00:00+02:00"), at("2024-10-28T00:00:00+01:00"), Calendar.DAY, tz
    )
    assert [(e - b) // H for b, e in days] == [25]
    hours = calendar_windows(days[0][0], days[0][1], Calendar.HOUR, tz)
    assert len(hours) == 25 and all(e - b == H for b, e in hours)


def test_fixed_windows_align_to_the_epoch() -> None:
    assert fixed_windows(90 * NS_PER_S, 200 * NS_PER_S, 60 * NS_PER_S) == [
        (60 * NS_PER_S, 120 * NS_PER_S),
        (120 * NS_PER_S, 180 * NS_PER_S),
        (180 * NS_PER_S, 240 * NS_PER_S),
    ]


def test_unknown_zone() -> None:
    with pytest.raises(ValueError, match="IANA"):
        zone("Asia/Atlantis")


def test_increases_count_a_reset_from_zero() -> None:
    assert increases(10.0, [(1, 12.0), (2, 1.5), (3, 2.0)]) == [(1, 2.0), (2, 1.5), (3, 0.5)]
    assert increases(None, [(1, 12.0), (2, 13.0)]) == [(2, 1.0)]


def test_deltas_belong_to_the_window_of_the_later_reading() -> None:
    windows = [(0, 10), (10, 20), (20, 30)]
    assert deltas(0.0, [(5, 1.0), (10, 3.0), (12, 0.5)], windows) == [1.0, 2.5, None]
    assert rate_per_hour(2.0, (0, 2 * H), 0, 4 * H) == 1.0
    assert rate_per_hour(2.0, (0, 2 * H), H, 4 * H) == 2.0  # only 1 h of the window requested


def test_fixed_grid_of_uniform_windows() -> None:
    hour = H
    kolkata = calendar_windows(0, 5 * hour, Calendar.HOUR, zone("Asia/Kolkata"))
    assert fixed_grid(kolkata) == (3600, 1800)
    shanghai = calendar_windows(0, 3 * 86400 * NS_PER_S, Calendar.DAY, zone("Asia/Shanghai"))
    assert fixed_grid(shanghai) == (86400, 57600)
    assert fixed_grid([(0, hour)]) == (3600, 0)
    assert fixed_grid([]) is None


def test_no_fixed_grid_across_dst_or_months() -> None:
    # Europe/London, 2024-03-31: a 23-hour day among 24-hour ones.
    start = int(datetime(2024, 3, 29, tzinfo=UTC).timestamp()) * NS_PER_S
    days = calendar_windows(
        start, start + 4 * 86400 * NS_PER_S, Calendar.DAY, zone("Europe/London")
    )
    assert fixed_grid(days) is None
    months = calendar_windows(start, start + 60 * 86400 * NS_PER_S, Calendar.MONTH, zone("UTC"))
    assert fixed_grid(months) is None
    assert fixed_grid([(0, NS_PER_S), (2 * NS_PER_S, 3 * NS_PER_S)]) is None  # a gap
    assert fixed_grid([(0, NS_PER_S // 2)]) is None  # not whole seconds
