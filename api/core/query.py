"""InfluxQL statements the API runs, built in one place so their safety can be checked in one place.

Two rules hold for every statement here:
- identifiers (measurement, field names) come only from the profile contract, and are quoted;
- every value a client supplies (device id, district, times) travels as a bound parameter
  (`$name` in the text, the value in `params`), so no input can change a statement's meaning.
The one exception InfluxQL forces is the GROUP BY time() interval, which takes no parameter: it is
formatted from an `int` of seconds that the caller computed, never from the client's text.
"""

# S608 flags every f-string that looks like SQL; in this module each one follows the rules above.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

from api.core.windows import Window
from common.influx import (
    AsyncInfluxClient,
    ParamValue,
    Regex,
    Series,
    first_series,
    quote_ident,
)
from device_profiles import FieldKind, FieldSpec, FieldType, Profile
from wire import changes as changes_layout
from wire import deadletters as dead_letters_layout
from wire import latest as latest_layout
from wire import rollups as rollups_layout
from wire.retention import LONG_TERM, qualified

DEVICE_TAG = quote_ident("device_id")
DISTRICT_TAG = quote_ident("district")
CHANGES = qualified(changes_layout.MEASUREMENT)
STAMP = quote_ident("stamp")
WINDOW_S = changes_layout.WINDOW_S

NUMERIC = (FieldType.NUMBER, FieldType.INTEGER)


HOUR_S = 3600


class Aggregate(StrEnum):
    """The closed set of aggregates a request may name: InfluxQL functions, plus `delta` and
    `rate` of counters, which the API computes itself (api.counters)."""

    MEAN = "mean"
    MIN = "min"
    MAX = "max"
    SUM = "sum"
    COUNT = "count"
    FIRST = "first"
    LAST = "last"
    SPREAD = "spread"
    DELTA = "delta"
    RATE = "rate"

    @property
    def on_counter(self) -> bool:
        return self in (Aggregate.DELTA, Aggregate.RATE)

    def accepts(self, field_type: FieldType) -> bool:
        """count, first and last take any field; the others need numbers (InfluxDB errors
        otherwise)."""
        return self in (Aggregate.COUNT, Aggregate.FIRST, Aggregate.LAST) or field_type in NUMERIC

    def problem(self, spec: FieldSpec) -> str | None:
        """Why this aggregate does not apply to the field, or None if it does."""
        counter = spec.effective_kind is FieldKind.COUNTER
        if self.on_counter and not counter:
            return f"{self.value} needs a counter field; this one is a {spec.effective_kind.value}"
        if counter and self in (Aggregate.MEAN, Aggregate.SUM, Aggregate.SPREAD):
            return (
                f"{self.value} of a counter means nothing (it only ever grows, and resets): "
                "use delta or rate"
            )
        if not self.accepts(spec.type):
            return f"{self.value} needs a numeric field; this one is {spec.type.value}"
        return None


@dataclass(frozen=True, slots=True)
class Query:
    text: str
    params: dict[str, ParamValue]


async def fetch(
    influx: AsyncInfluxClient, query: Query, *, timeout: float | None = None
) -> list[Series]:
    """Run one statement; times come back as integer nanoseconds (exact, unlike RFC 3339 text
    whose format differs between InfluxDB versions). `timeout`: as AsyncInfluxClient.query's."""
    answer = await influx.query(query.text, query.params, epoch="ns", timeout=timeout)
    return first_series(answer)


async def fetch_chunks(
    influx: AsyncInfluxClient,
    query: Query,
    chunk_size: int,
    timeout: float,
    *,
    compressed: bool = True,
) -> AsyncIterator[list[Series]]:
    """fetch's series, a chunk of at most `chunk_size` rows at a time, each parsed as it comes;
    InfluxDB may take up to `timeout` seconds to begin, and between two network reads.
    `compressed=False` for answers of few series (common.influx's query_chunks says why)."""
    async for series in influx.query_chunks(
        query.text,
        query.params,
        epoch="ns",
        chunk_size=chunk_size,
        timeout=timeout,
        compressed=compressed,
    ):
        yield series


def _measurement(profile: Profile) -> str:
    return quote_ident(profile.measurement)


def latest_reading(profile: Profile, device_id: str, since_ns: int) -> Query:
    """The newest reading of one device at or after `since_ns`."""
    return Query(
        f"SELECT * FROM {_measurement(profile)} "
        f"WHERE {DEVICE_TAG} = $device_id AND time >= $since "
        "ORDER BY time DESC LIMIT 1",
        {"device_id": device_id, "since": since_ns},
    )


def latest_readings(
    profile: Profile,
    since_ns: int,
    *,
    device_ids: Sequence[str] | None = None,
    district: str | None = None,
    ids_matching: Regex | None = None,
    ids_not_matching: Regex | None = None,
) -> Query:
    """The newest reading at or after `since_ns` of each device, one series per device_id tag,
    restricted to the given devices, district tag, and device ids (not) matching a pattern
    (api.core.series_split)."""
    conditions = ["time >= $since"]
    params: dict[str, ParamValue] = {"since": since_ns}
    if device_ids is not None:
        if not device_ids:
            raise ValueError("device_ids, when given, names at least one device")
        names = [f"d{n}" for n in range(len(device_ids))]
        conditions.append("(" + " OR ".join(f"{DEVICE_TAG} = ${n}" for n in names) + ")")
        params.update(zip(names, device_ids, strict=True))
    if district is not None:
        conditions.append(f"{DISTRICT_TAG} = $district")
        params["district"] = district
    if ids_matching is not None:
        conditions.append(f"{DEVICE_TAG} =~ $ids")
        params["ids"] = ids_matching
    if ids_not_matching is not None:
        conditions.append(f"{DEVICE_TAG} !~ $other_ids")
        params["other_ids"] = ids_not_matching
    # Not as a subquery (`SELECT * FROM (this) ORDER BY time DESC`: one series, the id a
    # column), though that cost InfluxDB 1.6 a fifth less CPU and a quarter of the answer's
    # bytes at 100,000 devices: it ignores a subquery's LIMIT there, and every reading of a
    # device in the lookback came back (measured: two readings a device, twice the rows).
    return Query(
        f"SELECT * FROM {_measurement(profile)} WHERE {' AND '.join(conditions)} "
        f"GROUP BY {DEVICE_TAG} ORDER BY time DESC LIMIT 1",
        params,
    )


def history(
    profile: Profile,
    field: str,
    agg: Aggregate,
    device_id: str,
    *,
    start_ns: int,
    end_ns: int,
    every_s: int,
) -> Query:
    """`agg(field)` of one device over [start, end) in epoch-aligned buckets of `every_s`;
    buckets without readings are left out (fill(none))."""
    _check_history(profile, field, agg, every_s)
    return Query(
        f"SELECT {agg.value}({quote_ident(field)}) AS {quote_ident('value')} "
        f"FROM {_measurement(profile)} "
        f"WHERE {DEVICE_TAG} = $device_id AND time >= $start AND time < $end "
        f"GROUP BY time({every_s:d}s) fill(none)",
        {"device_id": device_id, "start": start_ns, "end": end_ns},
    )


def _check_history(profile: Profile, field: str, agg: Aggregate, every_s: int) -> None:
    spec = profile.fields.get(field)
    if spec is None:
        raise ValueError(f"{field!r} is not a field of profile {profile.profile!r}")
    if agg.on_counter or not agg.accepts(spec.type):
        raise ValueError(f"{agg.value} does not apply to {spec.type.value} field {field!r}")
    if every_s < 1:  # `:d` in the statements also refuses anything but an int
        raise ValueError(f"bucket width must be at least 1s: {every_s!r}")


# Aggregates the hourly roll-ups in `long_term` (common.schema) answer exactly for whole hours:
# each hour keeps mean, min, max and count per field, so a sum is mean x count.
LONG_TERM_AGGREGATES = {
    Aggregate.MEAN: "sum({w}) / sum({c})",
    Aggregate.SUM: "sum({w})",
    Aggregate.COUNT: "sum({c})",
    Aggregate.MIN: "min({lo})",
    Aggregate.MAX: "max({hi})",
    Aggregate.SPREAD: "max({hi}) - min({lo})",
}


def history_long_term(
    profile: Profile,
    field: str,
    agg: Aggregate,
    device_id: str,
    *,
    start_ns: int,
    end_ns: int,
    every_s: int,
) -> Query:
    """`history` from the hourly roll-ups of the `long_term` policy, for windows older than the
    readings' own retention; `every_s` a whole number of hours, buckets epoch-aligned as there."""
    _check_history(profile, field, agg, every_s)
    if agg not in LONG_TERM_AGGREGATES:
        raise ValueError(f"{agg.value}({field!r}) is not kept in the long-term roll-ups")
    if every_s < HOUR_S or every_s % HOUR_S:
        raise ValueError(f"long-term buckets are whole hours, not {every_s!r} s")
    rollup = f"{quote_ident(LONG_TERM)}.{_measurement(profile)}"
    mean, count = quote_ident(f"mean_{field}"), quote_ident(f"count_{field}")
    lo, hi = quote_ident(f"min_{field}"), quote_ident(f"max_{field}")
    when = "time >= $start AND time < $end"
    inner = (
        f"SELECT {mean} * {count} AS w, {count} AS c, {lo} AS lo, {hi} AS hi FROM {rollup} "
        f"WHERE {DEVICE_TAG} = $device_id AND {when}"
    )
    select = LONG_TERM_AGGREGATES[agg].format(w="w", c="c", lo="lo", hi="hi")
    return Query(
        f"SELECT {select} AS {quote_ident('value')} FROM ({inner}) "
        f"WHERE {when} GROUP BY time({every_s:d}s) fill(none)",
        {"device_id": device_id, "start": start_ns, "end": end_ns},
    )


# --- dead letters (written by ingest: see ingest/deadletter.py) ---------------------------------

DEAD_LETTERS = qualified(dead_letters_layout.MEASUREMENT)


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    start_ns: int
    end_ns: int
    reasons: Sequence[str] = ()
    profiles: Sequence[str] = ()
    device_id: str | None = None

    def where(self) -> tuple[str, dict[str, ParamValue]]:
        conditions = ["time >= $start", "time < $end"]
        params: dict[str, ParamValue] = {"start": self.start_ns, "end": self.end_ns}
        for tag, values in (("reason", self.reasons), ("profile", self.profiles)):
            if values:
                names = [f"{tag}{n}" for n in range(len(values))]
                conditions.append(
                    "(" + " OR ".join(f"{quote_ident(tag)} = ${n}" for n in names) + ")"
                )
                params.update(zip(names, values, strict=True))
        if self.device_id is not None:
            # device_id is a field of a dead letter (free text from the topic), not a tag.
            conditions.append(f"{DEVICE_TAG} = $device_id")
            params["device_id"] = self.device_id
        return " AND ".join(conditions), params


def dead_letters(selection: DeadLetterFilter, *, limit: int, offset: int) -> Query:
    """Dead letters matching the filter, newest first. LIMIT and OFFSET take no bound parameter
    in InfluxQL; they are formatted from ints, like GROUP BY time()."""
    if limit < 1 or offset < 0:
        raise ValueError(f"bad page: limit={limit!r} offset={offset!r}")
    where, params = selection.where()
    return Query(
        f"SELECT * FROM {DEAD_LETTERS} WHERE {where} "
        f"ORDER BY time DESC LIMIT {limit:d} OFFSET {offset:d}",
        params,
    )


def dead_letter_counts(selection: DeadLetterFilter, by: str) -> Query:
    """Dead letters per value of the tag `by` (reason or profile)."""
    if by not in ("reason", "profile"):
        raise ValueError(f"dead letters are counted by reason or profile, not {by!r}")
    where, params = selection.where()
    # payload_bytes is present on every dead letter, so counting it counts dead letters.
    return Query(
        f"SELECT count({quote_ident('payload_bytes')}) AS {quote_ident('count')} "
        f"FROM {DEAD_LETTERS} WHERE {where} GROUP BY {quote_ident(by)}",
        params,
    )


def history_windows(
    profile: Profile, field: str, agg: Aggregate, device_id: str, windows: Sequence[Window]
) -> Query:
    """`agg(field)` of one device in each of the given windows (calendar windows computed by
    api.windows): one statement per window in one request, the bounds bound as $s<n>/$e<n>."""
    spec = profile.fields.get(field)
    if spec is None or agg.on_counter or not agg.accepts(spec.type):
        raise ValueError(f"{agg.value}({field!r}) is not a history of profile {profile.profile!r}")
    if not windows:
        raise ValueError("at least one window")
    params: dict[str, ParamValue] = {"device_id": device_id}
    statements = []
    for n, (begin, end) in enumerate(windows):
        statements.append(
            f"SELECT {agg.value}({quote_ident(field)}) AS {quote_ident('value')} "
            f"FROM {_measurement(profile)} "
            f"WHERE {DEVICE_TAG} = $device_id AND time >= $s{n:d} AND time < $e{n:d}"
        )
        params[f"s{n}"], params[f"e{n}"] = begin, end
    return Query("; ".join(statements), params)


def counter_readings(
    profile: Profile, field: str, device_id: str, *, start_ns: int, end_ns: int, since_ns: int
) -> Query:
    """Two statements: the counter's last reading before `start` (no older than `since`), whose
    increase to the first reading in the window belongs to the window; then every reading of
    the counter in [start, end), oldest first."""
    spec = profile.fields.get(field)
    if spec is None or spec.effective_kind is not FieldKind.COUNTER:
        raise ValueError(f"{field!r} is not a counter of profile {profile.profile!r}")
    f, m = quote_ident(field), _measurement(profile)
    return Query(
        f"SELECT last({f}) AS {quote_ident('value')} FROM {m} "
        f"WHERE {DEVICE_TAG} = $device_id AND time >= $since AND time < $start; "
        f"SELECT {f} AS {quote_ident('value')} FROM {m} "
        f"WHERE {DEVICE_TAG} = $device_id AND time >= $start AND time < $end AND {f} >= 0",
        {"device_id": device_id, "since": since_ns, "start": start_ns, "end": end_ns},
    )


async def fetch_all(influx: AsyncInfluxClient, query: Query) -> list[list[Series]]:
    """Every statement's series, in statement order."""
    return await influx.query(query.text, query.params, epoch="ns")


async def fetch_many(
    influx: AsyncInfluxClient, queries: Sequence[Query], *, concurrency: int
) -> list[list[list[Series]]]:
    """fetch_all of each query, at most `concurrency` at a time (InfluxDB runs the statements of
    one request one after the other, separate requests on separate cores), in query order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(query: Query) -> list[list[Series]]:
        async with gate:
            return await fetch_all(influx, query)

    return list(await asyncio.gather(*(one(query) for query in queries)))


# --- aggregation across devices ------------------------------------------------------------------

_CROSS = {
    # outer(inner) per group: each device weighs once per window, whatever its reporting rate.
    Aggregate.MEAN: ("mean", "mean"),
    Aggregate.MIN: ("min", "min"),
    Aggregate.MAX: ("max", "max"),
    Aggregate.SUM: ("sum", "mean"),  # e.g. total power: the sum of each device's mean
    Aggregate.COUNT: ("sum", "count"),  # readings in the window
    Aggregate.FIRST: ("first", "first"),
    Aggregate.LAST: ("last", "last"),
    Aggregate.SPREAD: ("spread", "mean"),  # spread between devices' means
}


def _tag_in(tag: str, values: Sequence[str], params: dict[str, ParamValue]) -> str:
    names = [f"{tag}{n}" for n in range(len(params), len(params) + len(values))]
    params.update(zip(names, values, strict=True))
    return "(" + " OR ".join(f"{quote_ident(tag)} = ${n}" for n in names) + ")"


def across_devices(
    profile: Profile,
    field: str,
    agg: Aggregate,
    windows: Sequence[Window],
    *,
    every_s: int | None,
    offset_s: int = 0,
    districts: Sequence[str] = (),
    equals: ParamValue | None = None,
) -> Query:
    """Per window, over the devices of `districts` (all devices if empty) taken as one group:
    `agg` over the devices' per-device aggregates, and `devices`, how many distinct devices
    contributed. With `equals`, the value counts the devices whose last value in the window
    equals it (lamps on), and each window is two statements: the count of those devices, then
    (`devices`) the count of devices that reported at all. Windows of one width (`every_s`,
    starting `offset_s` after the epoch's grid) are one GROUP BY time() statement (or pair);
    other windows are one statement (or pair) each.

    One group per query, on purpose: InfluxDB 1.x evaluates a subquery whose outer query groups
    by a tag many times slower than one whose outer query groups by time only (24 s against 4 s
    for 20,000 pipes over 24 h per hour), so a per-district answer is one query per district,
    which the caller can also run concurrently."""
    spec = profile.fields.get(field)
    if spec is None or agg.on_counter or not agg.accepts(spec.type):
        raise ValueError(f"{agg.value}({field!r}) cannot be aggregated across devices")
    if every_s is not None and every_s < 1:
        raise ValueError(f"bucket width must be at least 1s: {every_s!r}")
    params: dict[str, ParamValue] = {}
    extra = f" AND {_tag_in('district', districts, params)}" if districts else ""
    f, m, v = quote_ident(field), _measurement(profile), quote_ident("v")
    if equals is None:
        outer, inner = _CROSS[agg]
        select = f"{outer}({v}) AS {quote_ident('value')}, count({v}) AS {quote_ident('devices')}"
        where_outer = ""
        inner_fn = inner
    else:
        select = f"count({v}) AS {quote_ident('value')}"
        where_outer = f" AND {v} = $equals"
        params["equals"] = equals
        inner_fn = "last"
    if every_s is not None:
        grid = (
            f"time({every_s:d}s, {offset_s % every_s:d}s)"
            if offset_s % every_s
            else (f"time({every_s:d}s)")
        )
        # fill(none): a device without readings in a window adds no row (null) to the outer query.
        inner_group, outer_group = (
            f"{grid}, {DEVICE_TAG} fill(none)",
            f" GROUP BY {grid} fill(none)",
        )
        spans: Sequence[Window] = [(windows[0][0], windows[-1][1])]
    else:
        inner_group, outer_group, spans = DEVICE_TAG, "", windows
    statements = []
    for n, (begin, end) in enumerate(spans):
        bounds = f"time >= $s{n:d} AND time < $e{n:d}"
        params[f"s{n}"], params[f"e{n}"] = begin, end
        inner_q = (
            f"SELECT {inner_fn}({f}) AS {v} FROM {m} WHERE {bounds}{extra} GROUP BY {inner_group}"
        )
        statements.append(
            f"SELECT {select} FROM ({inner_q}) WHERE {bounds}{where_outer}{outer_group}"
        )
        if equals is not None:
            reporting = f"count({v}) AS {quote_ident('devices')}"
            statements.append(f"SELECT {reporting} FROM ({inner_q}) WHERE {bounds}{outer_group}")
    return Query("; ".join(statements), params)


def district_values(profile: Profile) -> Query:
    """The district tag values stored in the profile's measurement."""
    return Query(f"SHOW TAG VALUES FROM {_measurement(profile)} WITH KEY = {DISTRICT_TAG}", {})


def counter_readings_all(
    profile: Profile,
    field: str,
    *,
    start_ns: int,
    end_ns: int,
    since_ns: int,
    districts: Sequence[str] = (),
) -> Query:
    """Like counter_readings, for every device (one series per device_id and district)."""
    spec = profile.fields.get(field)
    if spec is None or spec.effective_kind is not FieldKind.COUNTER:
        raise ValueError(f"{field!r} is not a counter of profile {profile.profile!r}")
    params: dict[str, ParamValue] = {"since": since_ns, "start": start_ns, "end": end_ns}
    extra = f" AND {_tag_in('district', districts, params)}" if districts else ""
    f, m = quote_ident(field), _measurement(profile)
    return Query(
        f"SELECT last({f}) AS {quote_ident('value')} FROM {m} "
        f"WHERE time >= $since AND time < $start{extra} GROUP BY {DEVICE_TAG}, {DISTRICT_TAG}; "
        f"SELECT {f} AS {quote_ident('value')} FROM {m} "
        f"WHERE time >= $start AND time < $end{extra} GROUP BY {DEVICE_TAG}, {DISTRICT_TAG}",
        params,
    )


def changes(profile: Profile, *, since_ns: int, start_ns: int, end_ns: int) -> Query:
    """The change marks of the profile (see device_profiles.changes), stamps summed and counted
    per district: per change window in [start, end), and, when `since` is before `start`, over
    all of [since, start) as one row stamped `since` (a counter's lookback: up to 30 days of
    windows no cell needs one by one)."""
    s, n = quote_ident("s"), quote_ident("n")
    select = f"SELECT sum({STAMP}) AS {s}, count({STAMP}) AS {n} FROM {CHANGES} "
    where = f"WHERE {quote_ident('profile')} = $profile AND "
    windows = (
        f"{select}{where}time >= $start AND time < $end "
        f"GROUP BY time({WINDOW_S}s), {DISTRICT_TAG} fill(none)"
    )
    params: dict[str, ParamValue] = {
        "profile": profile.measurement,
        "since": since_ns,
        "start": start_ns,
        "end": end_ns,
    }
    if since_ns >= start_ns:
        return Query(windows, params)
    before = f"{select}{where}time >= $since AND time < $start GROUP BY {DISTRICT_TAG}"
    return Query(f"{before}; {windows}", params)


def all_changes(since_ns: int) -> Query:
    """Every change mark at or after `since_ns`, raw: one point per (profile, district, window),
    since a later write into a window overwrites its mark (api.live.snapshot compares them); its
    stamp, and its `quiet` stamp if an unannounced write left one (wire.changes)."""
    return Query(
        f"SELECT {STAMP}, {quote_ident(changes_layout.QUIET)} FROM {CHANGES} WHERE time >= $since "
        f"GROUP BY {quote_ident('profile')}, {DISTRICT_TAG}",
        {"since": since_ns},
    )


# --- latest rows (wire.latest, api.live.rows) --------------------------------------------------


def latest_complete() -> Query:
    """The point saying the latest rows are whole (wire.latest), if any writer wrote it."""
    return Query(f"SELECT * FROM {qualified(latest_layout.COMPLETE)} LIMIT 1", {})


def newest_owed() -> Query:
    """The newest mark of readings stored without their latest rows (wire.latest), if any."""
    return Query(f"SELECT * FROM {qualified(latest_layout.OWED)} ORDER BY time DESC LIMIT 1", {})


_FULL_LOADS = Regex("^" + latest_layout.FULL_LOAD)  # "full-load/": nothing RE2 reads as syntax


def latest_rows(profile: Profile, buckets: Regex, full_load: str) -> Query:
    """The rows of every device of the profile whose bucket matches `buckets` (a pattern of
    ours, split so that InfluxDB answers on all its cores), of every writer but full loads, and
    of the full load `full_load` ("": none): device, reading time, which fields the reading has
    and the profile's fields under their typed row keys."""
    keys = [
        latest_layout.key_of(profile.measurement, name, kind)
        for name, kind in profile.field_types().items()
    ]
    columns = [latest_layout.DEVICE, latest_layout.AT, latest_layout.HAS, *keys]
    return _rows_of(profile, columns, buckets, full_load)


def latest_row_times(profile: Profile, buckets: Regex) -> Query:
    """Device and reading time of the rows of every writer but full loads (api.live.compact):
    a fraction of the rows' cost to InfluxDB, which is per field."""
    return _rows_of(profile, [latest_layout.DEVICE, latest_layout.AT], buckets, "")


def full_load_row_times(profile: Profile, buckets: Regex, full_load: str) -> Query:
    """Device and reading time of the rows of the full load `full_load` alone."""
    return _rows_of(profile, [latest_layout.DEVICE, latest_layout.AT], buckets, full_load, True)


def _rows_of(
    profile: Profile, columns: list[str], buckets: Regex, full_load: str, alone: bool = False
) -> Query:
    writer = quote_ident(latest_layout.WRITER_TAG)
    writers = (
        f"{writer} = $full_load" if alone else f"({writer} !~ $full_loads OR {writer} = $full_load)"
    )
    return Query(
        f"SELECT {', '.join(quote_ident(c) for c in columns)} "
        f"FROM {qualified(latest_layout.MEASUREMENT)} "
        f"WHERE {quote_ident(latest_layout.PROFILE_TAG)} = $profile "
        f"AND {quote_ident(latest_layout.BUCKET_TAG)} =~ $buckets AND {writers}",
        {
            "profile": profile.measurement,
            "buckets": buckets,
            "full_loads": _FULL_LOADS,
            "full_load": full_load,
        },
    )


def full_loads() -> Query:
    """The writer tags of every full load's rows (wire.latest)."""
    return Query(
        f"SHOW TAG VALUES FROM {quote_ident(latest_layout.MEASUREMENT)} "
        f"WITH KEY = {quote_ident(latest_layout.WRITER_TAG)} "
        f"WHERE {quote_ident(latest_layout.WRITER_TAG)} =~ $full_loads",
        {"full_loads": _FULL_LOADS},
    )


# --- rollups across devices (wire.rollups, api.core.rollups) ----------------------------------

ROLLUPS = qualified(rollups_layout.MEASUREMENT)


def rollups(
    profile: Profile,
    grain: str,
    *,
    start_ns: int,
    end_ns: int,
    fields: Sequence[str] | None = None,
) -> Query:
    """The stored rollups of the profile at `grain` in [start, end), one series per district:
    the given field keys (all if None) and the point's signatures and time of computing."""
    if grain not in rollups_layout.GRAINS:
        raise ValueError(f"no rollups at grain {grain!r}")
    columns = "*"
    if fields is not None:
        columns = ", ".join(
            quote_ident(k) for k in (*fields, "sig_s", "sig_n", "lsig_s", "lsig_n", "at")
        )
    return Query(
        f"SELECT {columns} FROM {ROLLUPS} WHERE {quote_ident('profile')} = $profile "
        f"AND {quote_ident('grain')} = $grain AND time >= $start AND time < $end "
        f"GROUP BY {DISTRICT_TAG}",
        {"profile": profile.measurement, "grain": grain, "start": start_ns, "end": end_ns},
    )


def oldest(profile: Profile, fields: Sequence[str], since_ns: int) -> Query:
    """The oldest reading of each of the fields at or after `since` (one statement each)."""
    if not fields or any(f not in profile.fields for f in fields):
        raise ValueError(f"fields of profile {profile.profile!r}, at least one: {fields!r}")
    m = _measurement(profile)
    return Query(
        "; ".join(
            f"SELECT first({quote_ident(f)}) AS {quote_ident('value')} FROM {m} "
            "WHERE time >= $since"
            for f in fields
        ),
        {"since": since_ns},
    )


def last_before(profile: Profile, field: str, district: str, since_ns: int, start_ns: int) -> Query:
    """Each device's last reading of one field in [since, start) in one district, one series per
    device (a counter's reading before a span: the rollup keeper's)."""
    if field not in profile.fields:
        raise ValueError(f"{field!r} is not a field of profile {profile.profile!r}")
    return Query(
        f"SELECT last({quote_ident(field)}) AS {quote_ident('value')} "
        f"FROM {_measurement(profile)} "
        f"WHERE time >= $since AND time < $start AND {DISTRICT_TAG} = $district "
        f"GROUP BY {DEVICE_TAG}",
        {"since": since_ns, "start": start_ns, "district": district},
    )


def unit_readings(
    profile: Profile, fields: Sequence[str], district: str, start_ns: int, end_ns: int
) -> Query:
    """Every reading of the fields in [start, end) in one district, one series per device, oldest
    first, a column per field (null where a reading lacks it): the rollup keeper's input, no
    subquery (InfluxDB's cheapest read)."""
    if not fields or any(f not in profile.fields for f in fields):
        raise ValueError(f"fields of profile {profile.profile!r}, at least one: {fields!r}")
    return Query(
        f"SELECT {', '.join(quote_ident(f) for f in fields)} FROM {_measurement(profile)} "
        f"WHERE time >= $start AND time < $end AND {DISTRICT_TAG} = $district "
        f"GROUP BY {DEVICE_TAG}",
        {"start": start_ns, "end": end_ns, "district": district},
    )
