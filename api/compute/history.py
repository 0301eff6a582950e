"""One field of one device over time, aggregated per window, by one of three strategies:

- a counter's delta or rate: its readings (and the last one before the window) differenced per
  device window (api.core.counters), never averaged or summed;
- fixed-width windows: one GROUP BY time() statement;
- calendar windows (hour/day/week/month in a time zone, DST included): one statement per window.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from api.core import query as q
from api.core.counters import deltas, rate_per_hour
from api.core.params import field_spec, time_window, window_list
from api.core.readings import aggregate_value
from api.core.settings import ApiSettings
from api.core.times import NS_PER_S, format_rfc3339
from api.core.windows import Window
from api.schemas import BucketPublic, HistoryPublic
from common.influx import AsyncInfluxClient
from common.schema import seconds
from device_profiles import Device, FieldSpec, Profile


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    field: str
    agg: q.Aggregate = q.Aggregate.MEAN
    every: str = "5m"
    tz: str = "UTC"
    start: str | None = None
    end: str | None = None


@dataclass(frozen=True, slots=True)
class _Span:
    """The device's field and the windows a history covers."""

    device: Device
    profile: Profile
    field: str
    spec: FieldSpec
    agg: q.Aggregate
    start_ns: int
    end_ns: int
    windows: list[Window]


async def history(
    request: HistoryRequest,
    device: Device,
    profile: Profile,
    *,
    influx: AsyncInfluxClient,
    settings: ApiSettings,
) -> HistoryPublic:
    spec = field_spec(profile, request.field, request.agg)
    start_ns, end_ns = time_window(request.start, request.end)
    windows, every_s = window_list(
        request.every, request.tz, start_ns, end_ns, settings.api_history_max_points
    )
    span = _Span(device, profile, request.field, spec, request.agg, start_ns, end_ns, windows)
    if request.agg.on_counter:
        lookback = int(settings.api_latest_lookback * NS_PER_S)
        buckets = await _counter(influx, span, lookback)
    elif every_s is not None:
        cutoff = long_term_cutoff(settings, request.agg, every_s, time.time_ns())
        buckets = await _fixed(influx, span, every_s, cutoff)
    else:
        buckets = await _calendar(influx, span)
    return HistoryPublic(
        device_id=device.device_id,
        profile=profile.profile,
        field=request.field,
        unit=_unit(spec, request.agg),
        agg=request.agg,
        every=request.every,
        tz=request.tz if every_s is None else None,
        every_seconds=every_s,
        start=format_rfc3339(start_ns),
        end=format_rfc3339(end_ns),
        points=buckets,
    )


def _unit(spec: FieldSpec, agg: q.Aggregate) -> str | None:
    if agg is q.Aggregate.RATE and spec.unit:
        return f"{spec.unit}/h"
    if agg is q.Aggregate.COUNT:
        return None
    return spec.unit


async def _counter(influx: AsyncInfluxClient, span: _Span, lookback_ns: int) -> list[BucketPublic]:
    query = q.counter_readings(
        span.profile,
        span.field,
        span.device.device_id,
        start_ns=span.start_ns,
        end_ns=span.end_ns,
        since_ns=span.start_ns - lookback_ns,
    )
    before, inside = await q.fetch_all(influx, query)
    previous = next((float(r["value"]) for s in before for r in s.rows()), None)
    readings = [(int(r["time"]), float(r["value"])) for s in inside for r in s.rows()]
    values = deltas(previous, readings, span.windows)
    return [
        BucketPublic(
            time=format_rfc3339(w[0]),
            value=v
            if span.agg is q.Aggregate.DELTA
            else rate_per_hour(v, w, span.start_ns, span.end_ns),
        )
        for w, v in zip(span.windows, values, strict=True)
        if v is not None
    ]


def long_term_cutoff(
    settings: ApiSettings, agg: q.Aggregate, every_s: int, now_ns: int
) -> int | None:
    """Where the readings' retention begins, on a bucket boundary: buckets before it are
    answered from the hourly roll-ups (`long_term`), those after from the readings themselves.
    None when readings are kept for ever, or the question is not one roll-ups answer exactly
    (buckets of whole hours; mean, sum, count, min, max, spread)."""
    kept = seconds(settings.retention_readings)
    if kept is None or agg not in q.LONG_TERM_AGGREGATES or every_s % q.HOUR_S:
        return None
    every_ns = every_s * NS_PER_S
    oldest = now_ns - kept * NS_PER_S
    return -(-oldest // every_ns) * every_ns  # the first bucket wholly inside the retention


async def _fixed(
    influx: AsyncInfluxClient, span: _Span, every_s: int, cutoff: int | None
) -> list[BucketPublic]:
    if cutoff is None or cutoff <= span.start_ns:
        return await _buckets(
            influx, q.history, span, start_ns=span.start_ns, end_ns=span.end_ns, every_s=every_s
        )
    before = min(cutoff, span.end_ns)
    # Before the cutoff the roll-ups answer; a bucket they lack (hours before the continuous
    # queries existed, readings not yet dropped) still comes from the readings.
    rolled = await _buckets(
        influx, q.history_long_term, span, start_ns=span.start_ns, end_ns=before, every_s=every_s
    )
    raw = await _buckets(
        influx, q.history, span, start_ns=span.start_ns, end_ns=span.end_ns, every_s=every_s
    )
    found = {b.time: b for b in raw}
    found.update({b.time: b for b in rolled})
    return sorted(found.values(), key=lambda b: b.time)


async def _buckets(
    influx: AsyncInfluxClient,
    build: Callable[..., q.Query],
    span: _Span,
    *,
    start_ns: int,
    end_ns: int,
    every_s: int,
) -> list[BucketPublic]:
    query = build(
        span.profile,
        span.field,
        span.agg,
        span.device.device_id,
        start_ns=start_ns,
        end_ns=end_ns,
        every_s=every_s,
    )
    return [
        BucketPublic(
            time=format_rfc3339(row["time"]),
            value=aggregate_value(span.agg, span.spec, row["value"]),
        )
        for series in await q.fetch(influx, query)
        for row in series.rows()
        if row["value"] is not None  # fill(none) drops empty buckets; this guards the type
    ]


async def _calendar(influx: AsyncInfluxClient, span: _Span) -> list[BucketPublic]:
    clipped = [(max(b, span.start_ns), min(e, span.end_ns)) for b, e in span.windows]
    query = q.history_windows(span.profile, span.field, span.agg, span.device.device_id, clipped)
    results = await q.fetch_all(influx, query)
    return [
        BucketPublic(
            time=format_rfc3339(w[0]), value=aggregate_value(span.agg, span.spec, row["value"])
        )
        for w, result in zip(span.windows, results, strict=True)
        for series in result
        for row in series.rows()
        if row["value"] is not None
    ]
