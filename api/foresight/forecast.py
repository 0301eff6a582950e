"""The day-ahead forecast of energy per district per hour, and the seasonal-naive yardstick.

The model (statsmodels OLS, refitted every day on all the history it is given) explains the log
of each hour's energy by the kind of day and the hour — working day, Saturday, or rest day
(Sunday or a public holiday from the city's calendar) times 24 hours — and carries yesterday's
mean residual into tomorrow: the weather and whatever else moved the level persist from one day
to the next. Seasonal naive answers each hour with the same hour a week before. Both are scored
by MAPE against what was then measured, day by day, in the same backtest.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

HOURS = 24
WEEK = 168
MIN_DAYS = 8  # a week for seasonal naive, and at least a day of each kind to fit
WORKDAY, SATURDAY, REST = 0, 1, 2


def day_kind(day: date, holidays: Collection[date]) -> int:
    if day.weekday() == 6 or day in holidays:
        return REST
    return SATURDAY if day.weekday() == 5 else WORKDAY


def _design(first: date, days: int, holidays: Collection[date]) -> np.ndarray:
    rows = np.zeros((days * HOURS, 3 * HOURS))
    for d in range(days):
        kind = day_kind(first + timedelta(days=d), holidays)
        for h in range(HOURS):
            rows[d * HOURS + h, kind * HOURS + h] = 1.0
    return rows


def model_forecast(
    history: Sequence[float], first: date, holidays: Collection[date]
) -> list[float]:
    """The next day's 24 hourly values after `history` (whole days from local date `first`)."""
    # A second or two to import: only once a forecast is due, not at every API start.
    import statsmodels.api as sm  # noqa: PLC0415

    days = len(history) // HOURS
    if days < MIN_DAYS or len(history) % HOURS:
        raise ValueError(f"need whole days, at least {MIN_DAYS}: got {len(history)} hours")
    y = np.log(np.maximum(np.asarray(history, dtype=float), 1e-6))
    x = _design(first, days, holidays)
    # A kind of day never seen yet (no holiday in the history) has no column to fit: pinv
    # gives it zero, so fall back on a working day's shape for it below.
    fit = sm.OLS(y, x).fit(method="pinv")
    level = float(np.mean(y[-HOURS:] - fit.predict(x[-HOURS:])))
    tomorrow = first + timedelta(days=days)
    kind = day_kind(tomorrow, holidays)
    seen = {day_kind(first + timedelta(days=d), holidays) for d in range(days)}
    params = np.asarray(fit.params)
    use = kind if kind in seen else WORKDAY
    return [float(v) for v in np.exp(params[use * HOURS : (use + 1) * HOURS] + level)]


def seasonal_naive(history: Sequence[float]) -> list[float]:
    """Each hour of the next day: the same hour a week before."""
    if len(history) < WEEK:
        raise ValueError("seasonal naive needs a week of history")
    start = len(history) - WEEK
    return [float(v) for v in history[start : start + HOURS]]


def mape(actual: Sequence[float], forecast: Sequence[float]) -> float:
    """Mean absolute percentage error, hours with no energy left out (undefined there)."""
    pairs = [(a, f) for a, f in zip(actual, forecast, strict=True) if a > 0]
    if not pairs:
        raise ValueError("no hour with energy to score against")
    return 100.0 * sum(abs(a - f) / a for a, f in pairs) / len(pairs)


@dataclass(frozen=True, slots=True)
class DayScore:
    day: date
    model: list[float]
    naive: list[float]
    actual: list[float]
    mape_model: float
    mape_naive: float


def backtest(
    series: Sequence[float], first: date, holidays: Collection[date], from_day: int
) -> list[DayScore]:
    """Forecast every day from `from_day` on with the history before it, as a daily refit would
    have, and score both forecasts against the day's measured energy."""
    out = []
    for d in range(max(from_day, MIN_DAYS), len(series) // HOURS):
        history = series[: d * HOURS]
        actual = list(series[d * HOURS : (d + 1) * HOURS])
        if not any(a > 0 for a in actual):
            continue  # a day without any energy measured (no meter reported) cannot be scored
        model = model_forecast(history, first, holidays)
        naive = seasonal_naive(history)
        out.append(
            DayScore(
                first + timedelta(days=d),
                model,
                naive,
                actual,
                mape(actual, model),
                mape(actual, naive),
            )
        )
    return out
