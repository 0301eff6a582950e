"""Foresight's results as points of its own measurements, by the tree's one line-protocol
encoder. A point is keyed by its tags and time (a night, a day, an hour, a window's end), so a
round computed again overwrites what it computed before instead of adding to it.

- `signals`: tags signal, profile, district, device_id; fields value, and per signal its extras
  (night flow: minimum, baseline, leak; lamps: the day's figures);
- `forecasts`: tags district, model (`daytype_ols`, `seasonal_naive`); fields kwh per hour, and
  meters: the fewest meters any hour it was built from summed (api.foresight.run.fewest);
- `forecast_errors`: tags district; fields mape_model, mape_naive, peak_kwh, peak_hour per day
  once it is over, and meters: the fewest meters any hour of that day summed;
- `quality`: tags profile, district, device_id (empty for a district's own row); fields score and
  its parts, readings, expected, dead_letters.
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from api.foresight.lamps import LampDay
from api.foresight.nightflow import NightFlow
from api.foresight.quality import DeviceQuality, DistrictQuality
from api.foresight.queries import FORECAST_ERRORS, FORECASTS, QUALITY, SIGNALS
from api.foresight.run import Round
from device_profiles import SignalName
from wire.lineproto import FieldValue, line

MODEL, NAIVE = "daytype_ols", "seasonal_naive"


def day_ns(day: date, zone: ZoneInfo) -> int:
    """Local midnight starting `day`, epoch ns: the time a daily point is stored at."""
    return int(datetime(day.year, day.month, day.day, tzinfo=zone).timestamp()) * 10**9


def _signal(
    signal: SignalName, where: tuple[str, str, str], time_ns: int, values: dict[str, FieldValue]
) -> str:
    """`where`: profile, district and device id."""
    profile, district, device = where
    tags = {"signal": signal.value, "profile": profile, "district": district, "device_id": device}
    return line(SIGNALS, tags, values, time_ns)


def night_flow_lines(rows: list[NightFlow], district: str, zone: ZoneInfo) -> list[str]:
    out = []
    for r in rows:
        values: dict[str, FieldValue] = {"minimum": float(r.minimum), "leak": r.leak}
        if r.rise is not None and r.baseline is not None:
            values |= {"value": float(r.rise), "baseline": float(r.baseline)}
        out.append(
            _signal(
                SignalName.NIGHT_FLOW_RISE,
                ("water_pipe", district, r.device_id),
                day_ns(r.night, zone),
                values,
            )
        )
    return out


def district_night_lines(nights: dict[date, float], district: str, zone: ZoneInfo) -> list[str]:
    """The district's own minimum night flow (device_id empty: it is no device's)."""
    return [
        _signal(
            SignalName.NIGHT_FLOW_RISE,
            ("water_pipe", district, ""),
            day_ns(n, zone),
            {"district_minimum": float(v)},
        )
        for n, v in sorted(nights.items())
    ]


def lamp_lines(
    days: list[LampDay], drift: dict[tuple[str, date], float], district: str, zone: ZoneInfo
) -> list[str]:
    out = []
    for d in days:
        when = day_ns(d.day, zone)
        for signal, value in (
            (SignalName.LIT_BY_DAY, d.lit_by_day),
            (SignalName.DARK_BY_NIGHT, d.dark_by_night),
            (SignalName.POWER_WHILE_OFF, d.power_while_off),
            (SignalName.POWER_DRIFT, drift.get((d.device_id, d.day))),
        ):
            if value is not None:
                out.append(
                    _signal(
                        signal,
                        ("streetlight", district, d.device_id),
                        when,
                        {"value": float(value)},
                    )
                )
    return out


def forecast_lines(
    district: str, model: str, first_hour_ns: int, kwh: list[float], meters: int
) -> list[str]:
    return [
        line(
            FORECASTS,
            {"district": district, "model": model},
            {"kwh": float(v), "meters": meters},
            first_hour_ns + h * 3600 * 10**9,
        )
        for h, v in enumerate(kwh)
    ]


def error_line(
    district: str,
    day: date,
    zone: ZoneInfo,
    *,
    mape_model: float,
    mape_naive: float,
    actual: list[float],
    meters: int,
) -> str:
    peak = max(range(len(actual)), key=actual.__getitem__)
    values: dict[str, FieldValue] = {
        "mape_model": float(mape_model),
        "mape_naive": float(mape_naive),
        "peak_kwh": float(actual[peak]),
        "peak_hour": peak,
        "meters": meters,
    }
    return line(FORECAST_ERRORS, {"district": district}, values, day_ns(day, zone))


def quality_lines(
    devices: list[DeviceQuality], districts: list[DistrictQuality], time_ns: int
) -> list[str]:
    out = []
    for d in devices:
        values: dict[str, FieldValue] = {"score": d.score, **d.parts()}
        values |= {
            "readings": d.readings,
            "expected": d.expected,
            "dead_letters": sum(d.dead_letters.values()),
        }
        tags = {"profile": d.profile, "district": d.district, "device_id": d.device_id}
        out.append(line(QUALITY, tags, values, time_ns))
    for q in districts:
        values = {"score": q.score, **q.parts, "devices": q.devices, "worst": ",".join(q.worst)}
        out.append(line(QUALITY, {"district": q.district}, values, time_ns))
    return out


def round_lines(result: Round, quality_ns: int) -> list[str]:
    """Every point of a round; quality stamped `quality_ns` (the end of the window judged)."""
    out: list[str] = []
    for district, rows in result.night_flow.items():
        out += night_flow_lines(rows, district, result.zone)
        out += district_night_lines(result.district_night.get(district, {}), district, result.zone)
    for district, days in result.lamp_days.items():
        out += lamp_lines(days, result.drift.get(district, {}), district, result.zone)
    for district, scores in result.backtest.items():
        day_meters = result.day_meters.get(district, {})
        for s in scores:
            out.append(
                error_line(
                    district,
                    s.day,
                    result.zone,
                    mape_model=s.mape_model,
                    mape_naive=s.mape_naive,
                    actual=s.actual,
                    meters=day_meters.get(s.day, 0),
                )
            )
    for district, (day, model, naive) in result.ahead.items():
        first = day_ns(day, result.zone)
        meters = result.ahead_meters.get(district, 0)
        out += forecast_lines(district, MODEL, first, model, meters)
        out += forecast_lines(district, NAIVE, first, naive, meters)
    out += quality_lines(result.devices_quality, result.districts_quality, quality_ns)
    return out
