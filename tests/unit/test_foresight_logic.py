"""The pure logic of api.foresight on rows made here, answers worked out by hand."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from api.foresight import forecast, lamps, nightflow, quality
from api.foresight.run import fewest

ZONE = ZoneInfo("Asia/Shanghai")
FIRST = date(2026, 6, 1)


def _ns(day: date, hour: int, minute: int = 0) -> int:
    return (
        int(datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZONE).timestamp()) * 10**9
    )


def _night_rows(device: str, flows: list[float]) -> list[tuple[str, int, float]]:
    out = []
    for n, flow in enumerate(flows):
        day = FIRST + timedelta(days=n)
        out += [(device, _ns(day, 2 + m // 4, m % 4 * 15), flow + 0.01 * m) for m in range(8)]
        out.append((device, _ns(day, 5), flow - 5))  # outside 02:00-04:00: never the minimum
    return out


def test_night_minimum_is_the_lowest_flow_between_two_and_four() -> None:
    minimums = nightflow.night_minimums(_night_rows("A", [10.0, 11.0]), ZONE)
    assert minimums == {"A": {FIRST: 10.0, FIRST + timedelta(days=1): 11.0}}


def test_a_stuck_meter_has_no_night_minimum() -> None:
    rows = [("A", _ns(FIRST, 2 + m // 4, m % 4 * 15), 7.0) for m in range(8)]
    assert nightflow.night_minimums(rows, ZONE) == {}


def test_a_step_that_stays_is_a_leak_from_its_first_night() -> None:
    quiet = [10.0, 10.1, 9.9, 10.0, 10.05, 9.95, 10.0, 10.02]
    rows = _night_rows("A", [*quiet, 11.0, 11.0, 11.1]) + _night_rows("B", [10.0] * 11)
    minimums = nightflow.night_minimums(rows, ZONE)
    district = nightflow.district_night_flow(minimums)
    assert district[FIRST] == pytest.approx(20.0)
    result = nightflow.leaks(minimums, district, threshold=0.01)
    opened = {(r.device_id, r.leak_start) for r in result if r.leak_start is not None}
    assert opened == {("A", FIRST + timedelta(days=8))}
    eighth = next(r for r in result if r.device_id == "A" and r.night == FIRST + timedelta(days=8))
    assert eighth.baseline == pytest.approx(10.0)
    assert eighth.rise == pytest.approx(1.0 / 20.0)


def test_one_night_up_is_not_a_leak() -> None:
    flows = [10.0, 10.1, 9.9, 10.0, 10.05, 9.95, 10.0, 10.02, 12.0, 10.0, 10.0]
    minimums = nightflow.night_minimums(_night_rows("A", flows), ZONE)
    result = nightflow.leaks(minimums, nightflow.district_night_flow(minimums), 0.01)
    assert not any(r.leak for r in result)


def test_lamps_are_judged_against_the_sun_at_the_pole() -> None:
    day = date(2026, 6, 21)
    sunrise, sunset = lamps.sun_ns(30.27, 120.16, day, "Asia/Shanghai")
    # Hangzhou at midsummer: sunrise a little before 05:00, sunset a little after 19:00.
    assert _ns(day, 4, 45) < sunrise < _ns(day, 5, 5)
    assert _ns(day, 18, 55) < sunset < _ns(day, 19, 15)
    correct = [
        lamps.LampReading(t, "on" if t >= sunset + 5 * 60 * 10**9 or t < sunrise else "off", 2.0)
        for t in range(_ns(day, 0), _ns(day + timedelta(days=1), 0), 15 * 60 * 10**9)
    ]
    burning = [lamps.LampReading(r.time_ns, "on", 100.0) for r in correct]
    (good,) = [
        d for d in lamps.lamp_days("L", correct, 30.27, 120.16, "Asia/Shanghai") if d.day == day
    ]
    (bad,) = [
        d for d in lamps.lamp_days("L", burning, 30.27, 120.16, "Asia/Shanghai") if d.day == day
    ]
    assert good.lit_by_day == 0.0 and good.power_while_off == 2.0
    assert bad.lit_by_day == 1.0 and bad.power_while_off is None


def test_drift_is_against_the_lamps_own_first_week_and_its_peers() -> None:
    days = [
        lamps.LampDay(lamp, FIRST + timedelta(days=n), 0.0, 0.0, 2.0, power)
        for n in range(10)
        for lamp, power in (
            ("A", 100.0),
            ("B", 50.0),
            ("C", 80.0),
            ("D", 100.0 * (1.2 if n == 9 else 1)),
        )
    ]
    drift = lamps.drift(days)
    assert drift[("D", FIRST + timedelta(days=9))] == pytest.approx(0.2)
    assert drift[("A", FIRST + timedelta(days=9))] == pytest.approx(0.0)


def test_quality_parts_and_score() -> None:
    step = 900 * 10**9
    window = quality.Window(0, 96 * step)
    times = [k * step for k in range(96) if k % 4]  # a quarter missing
    q = quality.device_quality(
        "D", "water_pipe", "N",
        times_ns=times,
        stuck_values={"pressure": [float(k) for k in range(len(times))]},
        dead_letters={"out_of_range": 8},
        interval_s=900,
        window=window,
    )  # fmt: skip
    assert q.completeness == pytest.approx(72 / 96)
    assert q.validity == pytest.approx(72 / 80)
    assert q.stuck == 1.0 and q.clock == 1.0 and q.lag == 1.0
    assert q.score == pytest.approx(72 / 96 * 72 / 80)


def test_stuck_share_counts_runs_of_four_or_more() -> None:
    assert quality.stuck_share([1, 2, 2, 2, 2, 3, 4, 4, 4]) == pytest.approx(4 / 9)


def test_a_clock_losing_two_minutes_a_day_is_measured() -> None:
    slow = 900 * 10**9 - round(120 / 96 * 10**9)  # 96 readings a day, 1.25 s lost on each
    drift = quality.clock_drift([k * slow for k in range(50)], 900)
    assert drift == pytest.approx(-120.0, abs=0.5)


def test_seasonal_naive_and_mape() -> None:
    history = [float(h) for h in range(24 * 8)]
    assert forecast.seasonal_naive(history) == [float(h) for h in range(24, 48)]
    assert forecast.mape([100.0, 200.0], [110.0, 180.0]) == pytest.approx(10.0)


def test_the_model_learns_the_shape_of_each_kind_of_day() -> None:
    def energy(day: date, hour: int) -> float:
        base = 50.0 if forecast.day_kind(day, ()) == forecast.REST else 100.0
        return base + 10.0 * hour

    days = 15
    history = [energy(FIRST + timedelta(days=d), h) for d in range(days) for h in range(24)]
    tomorrow = FIRST + timedelta(days=days)
    predicted = forecast.model_forecast(history, FIRST, ())
    assert predicted == pytest.approx([energy(tomorrow, h) for h in range(24)], rel=1e-6)


def test_a_day_without_energy_is_left_out_of_the_backtest() -> None:
    """A day no meter reported has no error to score; the backtest goes on past it (it raised,
    and the API's foresight task died, on a district with a gap or no meters yet)."""
    day = [1.0 + h / 10 for h in range(forecast.HOURS)]
    series = day * 9 + [0.0] * forecast.HOURS + day
    scores = forecast.backtest(series, FIRST, set(), forecast.MIN_DAYS)
    assert [s.day for s in scores] == [FIRST + timedelta(days=8), FIRST + timedelta(days=10)]
    assert forecast.backtest([0.0] * forecast.HOURS * 10, FIRST, set(), forecast.MIN_DAYS) == []


def test_a_forecast_is_summed_from_the_fewest_meters_of_any_hour_that_had_any() -> None:
    """Open data is gated on it (api.foresight.serve): an hour of one meter in a day of fifty
    is one household's energy; an hour no meter reported holds no one's."""
    assert fewest([50, 50, 1, 50]) == 1
    assert fewest([0, 7, 0, 9]) == 7
    assert fewest([0, 0]) == 0 and fewest([]) == 0
