"""One foresight round over InfluxDB: read the window's readings district by district, compute
every signal, and hand back the results (`Round`) for storing, serving and alarms.

A round reads whole local days, [start, end) from midnight to midnight in the city's zone, so
nights, days and forecast hours fall on the same grid every time; data quality is judged on the
window the caller names (the last day in the background, the whole month in an evaluation), and
dead letters by when they were received.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from api.core import query as q
from api.core.contract import Contract
from api.core.series_split import Piece, Splits
from api.foresight import forecast, lamps, nightflow, quality, queries
from common.influx import AsyncInfluxClient, Series
from device_profiles import Profile, SignalName

WATER, LIGHT, METER = "water_pipe", "streetlight", "power_meter"
FLOW, POWER_FIELD = "flow", "activePower"
QUALITY_SLICE = 1_000  # devices judged between two yields to the event loop
DEFAULT_LEAK_SHARE = 0.01  # when the water profile declares no night_flow_rise rule
NS = 10**9


@dataclass(frozen=True, slots=True)
class Span:
    start_ns: int
    end_ns: int


@dataclass
class Round:
    zone: ZoneInfo
    days: Span  # whole local days the signals cover
    night_flow: dict[str, list[nightflow.NightFlow]] = field(default_factory=dict)
    district_night: dict[str, dict[date, float]] = field(default_factory=dict)
    lamp_days: dict[str, list[lamps.LampDay]] = field(default_factory=dict)
    drift: dict[str, dict[tuple[str, date], float]] = field(default_factory=dict)
    devices_quality: list[quality.DeviceQuality] = field(default_factory=list)
    districts_quality: list[quality.DistrictQuality] = field(default_factory=list)
    backtest: dict[str, list[forecast.DayScore]] = field(default_factory=dict)
    ahead: dict[str, tuple[date, list[float], list[float]]] = field(default_factory=dict)
    # Per district, how many meters the energy of each day, and the forecast, were summed from
    # (`fewest`): what open data is gated on, not the meters registered (a district rolling
    # out meters has many registered and few reporting).
    day_meters: dict[str, dict[date, int]] = field(default_factory=dict)
    ahead_meters: dict[str, int] = field(default_factory=dict)


def rule_threshold(profile: Profile | None, signal: SignalName) -> float | None:
    for rule in profile.signals if profile is not None else ():
        if rule.signal is signal:
            return rule.threshold
    return None


def fewest(meters: Sequence[int]) -> int:
    """The fewest meters any hour's energy was summed from, over the hours that had any (an hour
    no meter reported holds no one's energy): every published value built from these hours
    aggregates at least that many households. 0 when no hour had any."""
    return min((n for n in meters if n), default=0)


def _series_rows(series: list[Series], field_name: str) -> list[tuple[str, int, Any]]:
    out: list[tuple[str, int, Any]] = []
    for s in series:
        device = s.tags.get("device_id", "")
        index = s.columns.index(field_name)
        out.extend((device, int(row[0]), row[index]) for row in s.values)
    return out


class Foresight:
    """Computes rounds for a contract over one InfluxDB."""

    def __init__(
        self,
        contract: Contract,
        influx: AsyncInfluxClient,
        *,
        zone: str,
        holidays: frozenset[date] = frozenset(),
        concurrency: int = 2,
        series: int = 25_000,
        timeout: float | None = None,
    ) -> None:
        self.contract = contract
        self.influx = influx
        self.zone = ZoneInfo(zone)
        self.holidays = holidays
        self._gate = asyncio.Semaphore(concurrency)
        # A district's devices are read in pieces of at most `series` (api.core.series_split).
        self._splits = Splits(contract, series)
        # A district's read is as large as a latest-state load's, and InfluxDB plans all of it
        # before it answers: under load, past influx_timeout (10 s: rounds failed on
        # ReadTimeouts at 100,000 devices while the rollup keeper backfilled), so the load's.
        self._timeout = timeout

    async def _fetch(self, query: q.Query) -> list[Series]:
        async with self._gate:
            return await q.fetch(self.influx, query, timeout=self._timeout)

    async def _fetch_district(
        self, profile: str, district: str, query: Callable[[Piece], q.Query]
    ) -> list[Series]:
        """`query`'s series (one per device) over the district, asked piece by piece."""
        series: list[Series] = []
        for piece in self._splits.of(profile, district):
            series += await self._fetch(query(piece))
        return series

    def _districts(self, profile: str) -> list[str]:
        return sorted({d.district for d in self.contract.devices(profile)})

    async def compute(self, days: Span, judged: Span, letters: Span | None = None) -> Round:
        """Signals over the whole days of `days`, quality over `judged` (dead letters received
        in `letters`, by default `judged`)."""
        result = Round(self.zone, days)
        profiles = self.contract.profiles
        work = []
        if WATER in profiles and FLOW in profiles[WATER].fields:
            work += [self._water(result, d) for d in self._districts(WATER)]
        if LIGHT in profiles:
            work += [self._lamps(result, d) for d in self._districts(LIGHT)]
        if METER in profiles and POWER_FIELD in profiles[METER].fields:
            work += [self._energy(result, d) for d in self._districts(METER)]
        work.append(self._quality(result, judged, letters or judged))
        await asyncio.gather(*work)
        return result

    async def _water(self, result: Round, district: str) -> None:
        profile = self.contract.profiles[WATER]
        span = result.days
        series = await self._fetch_district(
            WATER,
            district,
            lambda piece: queries.readings(
                profile, [FLOW], district, span.start_ns, span.end_ns, piece=piece
            ),
        )
        rows = [(d, t, float(v)) for d, t, v in _series_rows(series, FLOW) if v is not None]
        minimums = nightflow.night_minimums(rows, self.zone)
        district_flow = nightflow.district_night_flow(minimums)
        share = rule_threshold(profile, SignalName.NIGHT_FLOW_RISE) or DEFAULT_LEAK_SHARE
        result.night_flow[district] = nightflow.leaks(minimums, district_flow, share)
        result.district_night[district] = district_flow

    async def _lamps(self, result: Round, district: str) -> None:
        profile = self.contract.profiles[LIGHT]
        fields = [f for f in ("powerState", "powerConsumption") if f in profile.fields]
        if "powerState" not in fields:
            return
        span = result.days
        series = await self._fetch_district(
            LIGHT,
            district,
            lambda piece: queries.readings(
                profile, fields, district, span.start_ns, span.end_ns, piece=piece
            ),
        )
        days: list[lamps.LampDay] = []
        for s in series:
            device = self.contract.device(s.tags.get("device_id", ""))
            if device is None:
                continue  # tagged with this district but not registered: never counted
            readings = [
                lamps.LampReading(int(r[0]), r[1], r[2] if len(r) > 2 else None) for r in s.values
            ]
            days += lamps.lamp_days(
                device.device_id, readings, device.latitude, device.longitude, self.zone.key
            )
            await asyncio.sleep(0)  # astral per reading: let requests through between lamps
        result.lamp_days[district] = days
        result.drift[district] = lamps.drift(days)

    async def _energy(self, result: Round, district: str) -> None:
        profile = self.contract.profiles[METER]
        span = result.days
        series = await self._fetch_district(
            METER,
            district,
            lambda piece: queries.hourly_means(
                profile, POWER_FIELD, district, span.start_ns, span.end_ns, piece=piece
            ),
        )
        hours = (span.end_ns - span.start_ns) // (3600 * NS)
        energy = [0.0] * hours
        meters = [0] * hours  # one hourly mean per meter and hour (queries.hourly_means)
        for _, t, v in _series_rows(series, "v"):
            index = (t - span.start_ns) // (3600 * NS)
            if v is not None and 0 <= index < hours:
                energy[index] += float(v)  # kW averaged over an hour: kWh
                meters[index] += 1
        if not any(energy):
            return  # no meter of the district reported in the span: nothing to forecast from
        first = datetime.fromtimestamp(span.start_ns / NS, self.zone).date()
        result.day_meters[district] = {
            first + timedelta(days=d): fewest(meters[d * forecast.HOURS : (d + 1) * forecast.HOURS])
            for d in range(hours // forecast.HOURS)
        }
        # Fitting is CPU work: off the event loop, so requests are answered meanwhile.
        scores = await asyncio.to_thread(
            forecast.backtest, energy, first, self.holidays, forecast.MIN_DAYS
        )
        result.backtest[district] = scores
        if len(energy) // forecast.HOURS >= forecast.MIN_DAYS:
            whole = energy[: len(energy) // forecast.HOURS * forecast.HOURS]
            model = await asyncio.to_thread(forecast.model_forecast, whole, first, self.holidays)
            tomorrow = date.fromordinal(first.toordinal() + len(whole) // forecast.HOURS)
            result.ahead[district] = (tomorrow, model, forecast.seasonal_naive(whole))
            # Both forecasts are built from hours of `whole` (the naive one is a day of it).
            result.ahead_meters[district] = fewest(meters[: len(whole)])

    async def _quality(self, result: Round, judged: Span, letters: Span) -> None:
        for name, profile in sorted(self.contract.profiles.items()):
            letters_by = await self._letters(name, letters)
            for district in self._districts(name):
                result.devices_quality += await self._district_quality(
                    profile, district, judged, letters_by
                )
        result.districts_quality = quality.district_quality(result.devices_quality)

    async def _letters(self, profile: str, span: Span) -> dict[str, dict[str, int]]:
        rows = await self._fetch(queries.dead_letters(profile, span.start_ns, span.end_ns))
        out: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
        for s in rows:
            for row in s.rows():
                out[str(row.get("device_id"))][str(row.get("reason"))] += 1
        return {k: dict(v) for k, v in out.items()}

    async def _district_quality(
        self, profile: Profile, district: str, judged: Span, letters: dict[str, dict[str, int]]
    ) -> list[quality.DeviceQuality]:
        watched = list(profile.stuck_fields) or [next(iter(profile.fields))]
        series = await self._fetch_district(
            profile.profile,
            district,
            lambda piece: queries.readings(
                profile, watched, district, judged.start_ns, judged.end_ns, piece=piece
            ),
        )
        found = {s.tags.get("device_id", ""): s for s in series}
        out = []
        for n, device in enumerate(self.contract.devices(profile.profile, district), 1):
            if n % QUALITY_SLICE == 0:
                await asyncio.sleep(0)  # a district of 100,000 devices is seconds of this
            s = found.get(device.device_id)
            rows = s.rows() if s is not None else []
            out.append(
                quality.device_quality(
                    device.device_id,
                    profile.profile,
                    district,
                    times_ns=[int(r["time"]) for r in rows],
                    stuck_values={f: [r[f] for r in rows if r.get(f) is not None] for f in watched},
                    dead_letters=letters.get(device.device_id, {}),
                    interval_s=profile.reporting_interval,
                    window=quality.Window(judged.start_ns, judged.end_ns),
                )
            )
        return out
