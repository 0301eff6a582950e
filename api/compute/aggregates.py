"""Aggregation across devices, computed from InfluxDB per (window, group) cell and kept
(api.compute.cells) until a write touches its windows: per district (or city-wide), of one field
of one profile. The question is an `AggregateRequest`; `answer` is what GET /aggregates returns,
and api.compute.warm asks the same questions in the background.

A cell not kept in memory is first looked up in the rollups the keeper stores in InfluxDB
(api.compute.keeper): for whole windows of 15 minutes, an hour or a day in the open-data zone, and
every aggregate but first/last (`equals` on state and boolean fields), it is combined from the
groups' districts' rollups, if their change-mark signatures still match (or moved less than
max-staleness seconds after they were computed). Everything else is computed from the readings
as before: other widths, zones and offsets, first/last, `equals` on text, windows clipped by
`start`/`end`, and windows whose rollup is missing or stale.

Open data is answered here too, under the rules GET /aggregates documents: whole districts, whole
days of the operator's zone that are over, and cells of fewer than k devices suppressed.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import defaultdict
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from zoneinfo import ZoneInfo

from api.compute.cells import Cell, CellCache, Marks, Signature
from api.compute.keeper import signatures as signatures_of
from api.core import query as q
from api.core import rollups
from api.core.contract import Contract
from api.core.counters import deltas, rate_per_hour
from api.core.errors import forbidden, invalid_query
from api.core.params import check_choice, field_spec, time_window, window_list
from api.core.phases import Phases
from api.core.readings import Value, aggregate_value
from api.core.settings import ApiSettings
from api.core.times import NS_PER_S, format_rfc3339, now_ns
from api.core.tokens import Principal, Scope
from api.core.windows import Window, fixed_grid
from api.schemas import AggregatePublic, AggregateRowPublic
from common.errors import InfluxRejected
from common.influx import AsyncInfluxClient, Series
from device_profiles import FieldSpec, FieldType, Profile
from wire.changes import window_of

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AggregateRequest:
    """The question of GET /aggregates, as its parameters say it."""

    profile: str
    field: str
    agg: q.Aggregate = q.Aggregate.MEAN
    equals: str | None = None
    every: str = "1h"
    tz: str = "UTC"
    group_by: Literal["district", "none"] = "district"
    district: str | None = None
    start: str | None = None
    end: str | None = None


def check(request: AggregateRequest, contract: Contract, settings: ApiSettings) -> None:
    """What can be checked of a question without asking InfluxDB; raises as `answer` would."""
    _validated(request, contract)
    start_ns, end_ns = time_window(request.start, request.end)
    window_list(request.every, request.tz, start_ns, end_ns, settings.api_history_max_points)


def _validated(request: AggregateRequest, contract: Contract) -> tuple[FieldSpec, Value | None]:
    check_choice("profile", request.profile, sorted(contract.profiles))
    check_choice("district", request.district, contract.districts)
    spec = field_spec(contract.profiles[request.profile], request.field, request.agg)
    return spec, _equals_param(request.agg, spec, request.equals)


@dataclass(frozen=True, slots=True)
class _Span:
    """The windows an answer covers: as asked, and clipped to [start_ns, end_ns)."""

    windows: list[Window]
    clipped: list[Window]
    every_s: int | None  # a fixed width; None for calendar windows
    start_ns: int
    end_ns: int


def _span(request: AggregateRequest, settings: ApiSettings, open_data: bool) -> _Span:
    start, end, every, tz = request.start, request.end, request.every, request.tz
    start_ns, end_ns = time_window(start, end)
    if open_data:
        start_ns, end_ns = _open_data_window(
            settings,
            every=every,
            tz=tz,
            group_by=request.group_by,
            start_ns=start_ns,
            end_ns=end_ns,
        )
    windows, every_s = window_list(every, tz, start_ns, end_ns, settings.api_history_max_points)
    if open_data:  # whole days, and only days that are over
        windows = [w for w in windows if w[1] <= end_ns]
        if not windows:
            raise invalid_query("end", end, "no whole day between start and end has ended yet")
        start_ns, end_ns = windows[0][0], windows[-1][1]
    else:
        # Whole windows by default: the same cells every time, so they can be kept (api.cells).
        start_ns = windows[0][0] if start is None else start_ns
        end_ns = windows[-1][1] if end is None else end_ns
    clipped = [(max(b, start_ns), min(e, end_ns)) for b, e in windows]
    return _Span(windows, clipped, every_s, start_ns, end_ns)


@dataclass(frozen=True, slots=True)
class Answered:
    body: AggregatePublic
    computed: str  # "<computed>/<cells>": cells computed from the readings (CELLS_HEADER)
    rolled: int  # cells served from stored rollups (ROLLUPS_HEADER)
    phases: Phases  # where the time went: marks, districts, kept, rollups, readings, rows


async def answer(
    request: AggregateRequest,
    *,
    principal: Principal,
    contract: Contract,
    influx: AsyncInfluxClient,
    settings: ApiSettings,
    cache: CellCache,
) -> Answered:
    """The answer, with how its cells were found and how long each phase took."""
    phases = Phases()
    spec, match = _validated(request, contract)
    check_choice("district", request.district, contract.districts)
    profile = contract.profiles[request.profile]
    districts = _scope_districts(principal, contract, request.profile, request.district)
    open_data = principal.scope is Scope.OPEN_DATA
    span = _span(request, settings, open_data)
    # One query per group (see q.across_devices), run concurrently: None is the whole selection,
    # EVERY_DISTRICT each district stored.
    groups: list[str | None] | None = [None]
    if request.group_by == "district":
        groups = list(districts) or EVERY_DISTRICT
    question = Question(profile, request.field, request.agg, match, tuple(districts))
    found = await _cells(
        influx,
        settings,
        cache,
        phases,
        question,
        windows=span.windows,
        clipped=span.clipped,
        every_s=span.every_s,
        groups=groups,
    )
    cells = found.cells
    if request.agg is q.Aggregate.RATE:
        cells = _rates(
            cells,
            found.as_of,
            windows=span.windows,
            clipped=span.clipped,
            start_ns=span.start_ns,
            end_ns=span.end_ns,
        )
    if match is not None:  # "0 lamps on" is an answer, not a missing row
        _zeros(cells, contract, request, districts, span.windows)
    k = settings.api_open_data_min_devices
    with phases.phase("rows"):
        body = _body(
            request,
            span,
            cells,
            spec=spec,
            match=match,
            contract=contract,
            districts=districts,
            k=k if open_data else None,
        )
    computed = f"{found.computed}/{len(span.windows) * found.groups}"
    return Answered(body, computed, found.rolled, phases)


def _body(
    request: AggregateRequest,
    span: _Span,
    cells: Cells,
    *,
    spec: FieldSpec,
    match: Value | None,
    contract: Contract,
    districts: list[str],
    k: int | None,  # open data's minimum of devices per cell; None: not open data
) -> AggregatePublic:
    return AggregatePublic(
        profile=request.profile,
        field=request.field,
        agg=request.agg,
        equals=match,
        unit=_unit(spec, request.agg),
        every=request.every,
        tz=request.tz if span.every_s is None else None,
        start=format_rfc3339(span.start_ns),
        end=format_rfc3339(span.end_ns),
        group_by=request.group_by,
        min_devices=k,
        rows=_rows(cells, contract, request.profile, districts, k=k),
    )


def _zeros(
    cells: Cells,
    contract: Contract,
    request: AggregateRequest,
    districts: list[str],
    windows: list[Window],
) -> None:
    """Counting devices: a group with devices but none matching is 0, not a missing row."""
    expected: list[str | None] = [None]
    if request.group_by == "district":
        every = districts or contract.districts
        expected = [d for d in every if contract.devices(request.profile, d)]
    for window in windows:
        for group in expected:
            cells.setdefault((window[0], group), (0, 0))


def _rows(
    cells: Cells,
    contract: Contract,
    profile: str,
    districts: list[str],
    *,
    k: int | None,
) -> list[AggregateRowPublic]:
    """The rows, oldest first, then by district; with open data (k set), cells to which fewer
    than k devices contributed (counting devices: fewer than k reported) suppressed."""
    rows = []
    for (begin, group), (value, devices) in sorted(
        cells.items(), key=lambda c: (c[0][0], c[0][1] or "")
    ):
        registered = _registered(contract, profile, group, districts)
        hidden = k is not None and devices < k
        rows.append(
            AggregateRowPublic(
                time=format_rfc3339(begin),
                district=group,
                value=None if hidden else value,
                devices=None if hidden else devices,
                registered=registered,
                suppressed=hidden,
            )
        )
    return rows


def _unit(spec: FieldSpec, agg: q.Aggregate) -> str | None:
    if agg is q.Aggregate.COUNT:
        return None
    if agg is q.Aggregate.RATE and spec.unit:
        return f"{spec.unit}/h"
    return spec.unit


def _rates(
    deltas: Cells,
    as_of: dict[tuple[int, str | None], int],
    *,
    windows: list[Window],
    clipped: list[Window],
    start_ns: int,
    end_ns: int,
) -> Cells:
    """Increases per hour over the part of each window the data covers: up to `end`, or up to
    when the (kept) increase was computed. A window the data does not reach yet has no rate."""
    index = {w[0]: n for n, w in enumerate(windows)}
    rates: Cells = {}
    for key, (delta, devices) in deltas.items():
        window = clipped[index[key[0]]]
        until = min(end_ns, as_of[key])
        if min(window[1], until) - max(window[0], start_ns) > 0:
            rates[key] = (rate_per_hour(float(delta), window, start_ns, until), devices)
    return rates


def _equals_param(agg: q.Aggregate, spec: FieldSpec, equals: str | None) -> Value | None:
    if equals is None:
        return None
    if agg is not q.Aggregate.COUNT:
        raise invalid_query("equals", equals, "equals goes with agg=count")
    return _equals_value(spec.type, equals, spec.values)


def _equals_value(field_type: FieldType, text: str, allowed: tuple[str, ...] | None) -> Value:
    if field_type is FieldType.BOOLEAN:
        if text not in ("true", "false"):
            raise invalid_query("equals", text, "a boolean field equals true or false")
        return text == "true"
    if field_type is FieldType.STATE:
        if allowed is not None and text not in allowed:
            raise invalid_query("equals", text, f"allowed: {', '.join(allowed)}")
        return text
    if field_type is FieldType.TEXT:
        return text
    raise invalid_query("equals", text, "equals applies to state, boolean and text fields")


def _registered(contract: Contract, profile: str, group: str | None, districts: list[str]) -> int:
    if group is not None:
        return len(contract.devices(profile, group))
    if districts:
        return sum(len(contract.devices(profile, d)) for d in districts)
    return len(contract.devices(profile))


Cells = dict[tuple[int, str | None], tuple[Value, int]]  # (window start, district): value, devices


@dataclass(frozen=True, slots=True)
class Question:
    """What a cell is an answer to, whoever asks: the token's scope only filters the rows."""

    profile: Profile
    field: str
    agg: q.Aggregate
    match: Value | None
    districts: tuple[str, ...]  # the selection for group_by=none; () = all

    def key(self, group: str | None, window: Window) -> Hashable:
        # A rate is kept as its delta: what a rate is divided by depends on the time of asking.
        agg = q.Aggregate.DELTA if self.agg.on_counter else self.agg
        selection = self.districts if group is None else ()
        return (self.profile.profile, self.field, agg, self.match, selection, group, window)


EVERY_DISTRICT = None  # groups: each district stored (`_every_district`)


@dataclass(frozen=True, slots=True)
class _Found:
    cells: Cells
    as_of: dict[tuple[int, str | None], int]  # when each cell's data is as of (ns)
    computed: int  # cells computed from the readings
    rolled: int  # cells from stored rollups
    groups: int


async def _marks(
    influx: AsyncInfluxClient, cache: CellCache, phases: Phases, query: q.Query
) -> tuple[float, int, Marks]:
    """The change marks `query` reads, as (read_at, as_of_ns, marks): read now, or an answer
    read moments ago for another ask (CellCache.marks)."""
    key = (query.text, tuple(sorted(query.params.items())))
    reused = cache.marks(key)
    if reused is not None:
        return reused
    read_at, as_of_ns = cache.now(), now_ns()
    with phases.phase("marks"):
        results = await q.fetch_all(influx, query)
        marks = Marks.from_series(s for result in results for s in result)
    cache.put_marks(key, read_at, as_of_ns, marks)
    return read_at, as_of_ns, marks


async def _cells(
    influx: AsyncInfluxClient,
    settings: ApiSettings,
    cache: CellCache,
    phases: Phases,
    question: Question,
    *,
    windows: list[Window],
    clipped: list[Window],
    every_s: int | None,
    groups: list[str | None] | None,
) -> _Found:
    """The answer's cells, from the cache where their data has not changed, then from stored
    rollups where they answer (`_from_rollups`), the rest from InfluxDB's readings: per group,
    one computation spanning its first to its last stale window."""
    profile, counter = question.profile, question.agg.on_counter
    # A counter's increase in a window depends on the last reading before it, too.
    since = clipped[0][0] - (int(settings.api_latest_lookback * NS_PER_S) if counter else 0)
    # Read before computing: a write landing meanwhile moves the signature, not the cell. From
    # the start of the change window holding `since`: marks are stamped at their window's start.
    lookback, start = window_of(since), window_of(clipped[0][0])
    if counter and settings.api_rollups_serve:
        # Per-window rows over the lookback too: a rollup's counter signature starts at its own
        # window's lookback, not the answer's (api.compute.keeper.signatures).
        start = lookback
    query = q.changes(profile, since_ns=lookback, start_ns=start, end_ns=clipped[-1][1])
    read_at, as_of_ns, marks = await _marks(influx, cache, phases, query)
    if groups is EVERY_DISTRICT:
        groups = [*await _every_district(influx, cache, phases, profile, marks)]
    cells: Cells = {}
    as_of: dict[tuple[int, str | None], int] = {}
    signatures: dict[tuple[str | None, int], Signature] = {}
    stale: dict[str | None, list[int]] = defaultdict(list)
    with phases.phase("kept"):
        for group in groups:
            selection = [group] if group is not None else (list(question.districts) or None)
            for n, window in enumerate(clipped):
                since_n = since if counter else window[0]
                signature = marks.signature(selection, since_n, window[1])
                signatures[(group, n)] = signature
                cell = cache.get(question.key(group, window), signature)
                if cell is None:
                    stale[group].append(n)
                elif cell.value is not None:
                    cells[(windows[n][0], group)] = (cell.value, cell.devices)
                    as_of[(windows[n][0], group)] = cell.as_of_ns
    rolled = 0
    if stale and settings.api_rollups_serve:
        with phases.phase("rollups"):
            rolled = await _from_rollups(
                influx,
                settings,
                cache,
                question,
                marks,
                windows=windows,
                clipped=clipped,
                stale=stale,
                signatures=signatures,
                cells=cells,
                as_of=as_of,
            )
    gate = asyncio.Semaphore(settings.api_query_concurrency)

    async def compute(group: str | None, lo: int, hi: int) -> Cells:
        async with gate:
            if counter:
                return await _counter_cells(
                    influx,
                    settings,
                    profile,
                    question.field,
                    windows=windows[lo:hi],
                    clipped=clipped[lo:hi],
                    groups=[group],
                    districts=list(question.districts),
                )
            return await _gauges(
                influx,
                settings,
                profile,
                question.field,
                agg=question.agg,
                match=question.match,
                every_s=every_s,
                windows=windows[lo:hi],
                clipped=clipped[lo:hi],
                groups=[group],
                districts=list(question.districts),
            )

    spans = [(group, ns[0], ns[-1] + 1) for group, ns in stale.items()]
    parts: list[Cells] = []
    if spans:
        with phases.phase("readings"):
            parts = await asyncio.gather(*(compute(*span) for span in spans))
    for (group, lo, hi), part in zip(spans, parts, strict=True):
        for n in range(lo, hi):
            value = part.get((windows[n][0], group))
            if value is not None:
                cells[(windows[n][0], group)] = value
                as_of[(windows[n][0], group)] = as_of_ns
            cell = Cell(None, 0, as_of_ns) if value is None else Cell(*value, as_of_ns)
            cache.put(question.key(group, clipped[n]), cell, signatures[(group, n)], read_at)
    return _Found(cells, as_of, sum(hi - lo for _, lo, hi in spans), rolled, len(groups))


async def _every_district(
    influx: AsyncInfluxClient, cache: CellCache, phases: Phases, profile: Profile, marks: Marks
) -> list[str]:
    """Every district the profile's readings are stored under: the district tags InfluxDB
    holds, read at most every DISTRICTS_FRESH_S (cells.CellCache.districts; a query per
    question was one InfluxDB round trip of the two an asked-again answer made), with every
    district the marks just read name, so a district's first marked write shows at once. A
    district first written without marks (not by ingest or replay) shows within the interval."""
    stored = cache.districts(profile.profile)
    if stored is None:
        read_at = cache.now()  # as of before the read: a district stored meanwhile is not in it
        with phases.phase("districts"):
            stored = await _stored_districts(influx, profile)
        cache.put_districts(profile.profile, stored, read_at)
    return sorted(set(stored) | {d for d in marks.districts() if d})


async def _from_rollups(
    influx: AsyncInfluxClient,
    settings: ApiSettings,
    cache: CellCache,
    question: Question,
    marks: Marks,
    *,
    windows: list[Window],
    clipped: list[Window],
    stale: dict[str | None, list[int]],
    signatures: dict[tuple[str | None, int], Signature],
    cells: Cells,
    as_of: dict[tuple[int, str | None], int],
) -> int:
    """The stale cells the stored rollups (api.compute.keeper) answer, moved from `stale` into
    `cells` and the cache; how many. Only whole windows of a grain (15m, 1h, the day in the
    open-data zone) and aggregates rollups keep (api.core.rollups.answers); the others are
    computed from the readings as before. A rollup is served if the change marks under it did
    not move since it was computed, or moved less than max-staleness seconds after: the same
    rule as kept cells, so an answer never lags the stored data by more than that."""
    profile, agg, match = question.profile, question.agg, question.match
    spec = profile.fields[question.field]
    grain = rollups.grain_of(windows, ZoneInfo(settings.api_open_data_timezone))
    if grain is None or not rollups.answers(spec, agg, match):
        return 0
    wanted = {n for ns in stale.values() for n in ns if clipped[n] == windows[n]}
    if not wanted:
        return 0
    query = q.rollups(
        profile,
        grain,
        start_ns=windows[min(wanted)][0],
        end_ns=windows[max(wanted)][1],
        fields=rollups.field_keys(question.field, spec),
    )
    try:
        stored = _stored_rollups(await q.fetch(influx, query), profile, question.field)
    except InfluxRejected as exc:
        # A database whose schema predates rollups (no `aggregates` policy until ingest or
        # `citysense schema` runs again): answer from the readings, as before rollups.
        log.warning("rollups not readable, computing from the readings: %s", exc)
        return 0
    everywhere: list[str] = []
    if None in stale and not question.districts:
        everywhere = await _every_district(influx, cache, Phases(), profile, marks)
    now = now_ns()
    lookback = int(settings.api_latest_lookback * NS_PER_S)
    read_at = cache.now()
    served = 0
    for group, ns in list(stale.items()):  # groups answered whole are taken out
        members = [group] if group is not None else (list(question.districts) or everywhere)
        left = []
        for n in ns:
            found = _combined(
                stored,
                members,
                windows[n],
                marks=marks,
                lookback_ns=lookback,
                counter=agg.on_counter,
            )
            if (
                n not in wanted
                or found is None
                or (
                    not found[1]
                    and (now - found[2]) / NS_PER_S >= settings.api_aggregate_max_staleness
                )
            ):
                left.append(n)
                continue
            rollup, fresh, at = found
            value = rollups.value_of(rollup, spec, agg, match)
            if value is not None:
                cells[(windows[n][0], group)] = value
                as_of[(windows[n][0], group)] = at
            cell = Cell(None, 0, at) if value is None else Cell(*value, at)
            # A rollup older than its marks is kept only for what is left of max-staleness.
            signature = signatures[(group, n)] if fresh else (-1, -1)
            since = read_at if fresh else read_at - (now - at) / NS_PER_S
            cache.put(question.key(group, clipped[n]), cell, signature, since)
            served += 1
        if left:
            stale[group] = left
        else:
            del stale[group]
    return served


Stored = dict[str, dict[int, tuple[rollups.FieldRollup, tuple[int, ...]]]]


def _stored_rollups(found: list[Series], profile: Profile, field: str) -> Stored:
    """district -> window start -> (the field's rollup, the point's signatures and time)."""
    stored: Stored = {}
    for series in found:
        if not set(rollups.POINT_FIELDS) <= set(series.columns):
            continue  # not a point the keeper wrote whole
        point = [series.columns.index(k) for k in rollups.POINT_FIELDS]
        kept = stored.setdefault(series.tags.get("district", ""), {})
        for row in series.values:
            if row[point[-1]] is None:
                continue
            got = rollups.from_columns(series.columns, row, profile).get(field)
            kept[int(row[0])] = (
                got or rollups.FieldRollup(),
                tuple(int(row[i] or 0) for i in point),
            )
    return stored


def _combined(
    stored: Stored,
    members: list[str],
    window: Window,
    *,
    marks: Marks,
    lookback_ns: int,
    counter: bool,
) -> tuple[rollups.FieldRollup, bool, int] | None:
    """The districts' rollups of the window combined, whether every one's marks are unchanged
    since it was computed, and the oldest one's time of computing; None if one is missing."""
    parts = []
    fresh, oldest = True, now_ns()
    for district in members:
        got = stored.get(district, {}).get(window[0])
        if got is None:
            return None
        rollup, (sig_s, sig_n, lsig_s, lsig_n, at) = got
        own, before = signatures_of(marks, district, window, lookback_ns)
        fresh = fresh and ((lsig_s, lsig_n) == before if counter else (sig_s, sig_n) == own)
        oldest = min(oldest, at)
        parts.append(rollup)
    return rollups.combine(parts), fresh, oldest


async def _gauges(
    influx: AsyncInfluxClient,
    settings: ApiSettings,
    profile: Profile,
    field: str,
    *,
    agg: q.Aggregate,
    match: Value | None,
    every_s: int | None,
    windows: list[Window],
    clipped: list[Window],
    groups: list[str | None],
    districts: list[str],
) -> Cells:
    spec = profile.fields[field]
    grid = fixed_grid(windows) if every_s is None else (every_s, 0)
    queries = [
        q.across_devices(
            profile,
            field,
            agg,
            clipped,
            every_s=None if grid is None else grid[0],
            offset_s=0 if grid is None else grid[1],
            districts=districts if group is None else [group],
            equals=match,
        )
        for group in groups
    ]
    results = await q.fetch_many(influx, queries, concurrency=settings.api_query_concurrency)
    cells: Cells = {}
    for group, result in zip(groups, results, strict=True):
        cells.update(
            _gauge_cells(
                result,
                spec,
                agg,
                group=group,
                windows=windows,
                stamped=grid is not None,
                counting=match is not None,
            )
        )
    return cells


async def _stored_districts(influx: AsyncInfluxClient, profile: Profile) -> list[str]:
    """Groups follow the district tag stored with each reading, which may name a district the
    registry does not (readings of unknown devices accepted as "unassigned")."""
    return sorted(
        str(row[1])
        for series in await q.fetch(influx, q.district_values(profile))
        for row in series.values
    )


def _window_of(starts: list[int], stamp: int) -> int:
    """The start of the window holding `stamp` (`starts` ascending)."""
    return starts[max(0, bisect.bisect_right(starts, stamp) - 1)]


def _gauge_cells(
    results: list[list[Series]],
    spec: FieldSpec,
    agg: q.Aggregate,
    *,
    group: str | None,
    windows: list[Window],
    stamped: bool,
    counting: bool,
) -> Cells:
    if counting:
        return _counting_cells(results, group=group, windows=windows, stamped=stamped)
    cells: Cells = {}
    for begin, row, columns in _rows_by_window(results, windows, stamped):
        value = row[columns.index("value")]
        if value is not None:
            at_devices = columns.index("devices") if "devices" in columns else None
            devices = int((row[at_devices] if at_devices is not None else 0) or 0)
            cells[(begin, group)] = (aggregate_value(agg, spec, value), devices)
    return cells


def _counting_cells(
    results: list[list[Series]], *, group: str | None, windows: list[Window], stamped: bool
) -> Cells:
    """Devices whose last value matched, and devices that reported at all, per window: the
    statements come in pairs (q.across_devices with `equals`)."""
    matched: dict[int, int] = {}
    reporting: dict[int, int] = {}
    for pair in range(0, len(results), 2):
        # Per-window statements come as pairs per window; one GROUP BY time() pair otherwise.
        spans = [windows[pair // 2]] if not stamped else windows
        for counts, key in ((matched, "value"), (reporting, "devices")):
            for begin, row, columns in _rows_by_window(
                [results[pair + (key == "devices")]], spans, stamped
            ):
                count = row[columns.index(key)]
                if count is not None:
                    counts[begin] = int(count)
    return {(b, group): (matched.get(b, 0), reporting.get(b, 0)) for b in {*matched, *reporting}}


def _rows_by_window(
    results: list[list[Series]], windows: list[Window], stamped: bool
) -> Iterator[tuple[int, Sequence[Any], Sequence[str]]]:
    """Each row with the start of its window. A row of a GROUP BY time() statement is stamped
    with its window (or `start` for the first, which may be clipped); a per-window statement's
    row belongs to its statement's window."""
    starts = [w[0] for w in windows]
    for n, result in enumerate(results):
        for series in result:
            for row in series.values:
                begin = _window_of(starts, int(row[0])) if stamped else windows[n][0]
                yield begin, row, series.columns


async def _counter_cells(
    influx: AsyncInfluxClient,
    settings: ApiSettings,
    profile: Profile,
    field: str,
    *,
    windows: list[Window],
    clipped: list[Window],
    groups: list[str | None],
    districts: list[str],
) -> Cells:
    """Each group's summed increase of the counter per window (rates are made from these)."""
    start_ns, end_ns = clipped[0][0], clipped[-1][1]
    queries = [
        q.counter_readings_all(
            profile,
            field,
            start_ns=start_ns,
            end_ns=end_ns,
            since_ns=start_ns - int(settings.api_latest_lookback * NS_PER_S),
            districts=districts if group is None else [group],
        )
        for group in groups
    ]
    totals: dict[tuple[int, str | None], float] = defaultdict(float)
    devices: dict[tuple[int, str | None], int] = defaultdict(int)
    results = await q.fetch_many(influx, queries, concurrency=settings.api_query_concurrency)
    for group, (before, inside) in zip(groups, results, strict=True):
        previous = {s.tags.get("device_id", ""): float(s.values[0][1]) for s in before if s.values}
        for series in inside:
            readings = [(int(t), float(v)) for t, v in series.values]
            for window, delta in zip(
                windows,
                deltas(previous.get(series.tags.get("device_id", "")), readings, clipped),
                strict=True,
            ):
                if delta is not None:
                    totals[(window[0], group)] += delta
                    devices[(window[0], group)] += 1
    return {key: (total, devices[key]) for key, total in totals.items()}


def _scope_districts(
    principal: Principal, contract: Contract, profile: str, district: str | None
) -> list[str]:
    """Districts the query is restricted to ([] = all)."""
    if principal.scope is Scope.DEPARTMENT and not principal.sees_profile(profile):
        raise forbidden(f"token {principal.name!r} may not read profile {profile!r}")
    if district is not None:
        if not principal.sees_district(district):
            raise forbidden(f"token {principal.name!r} may not read district {district!r}")
        return [district]
    if principal.districts is not None:
        return sorted(principal.districts)
    return []


def _open_data_window(
    settings: ApiSettings, *, every: str, tz: str, group_by: str, start_ns: int, end_ns: int
) -> tuple[int, int]:
    if group_by != "district":
        raise forbidden("open data is published per district only (group_by=district)")
    if every != "day" or tz != settings.api_open_data_timezone:
        raise invalid_query(
            "every",
            every,
            f"open data is published per whole day in {settings.api_open_data_timezone}: "
            f"every=day&tz={settings.api_open_data_timezone}",
        )
    return start_ns, min(end_ns, now_ns())
