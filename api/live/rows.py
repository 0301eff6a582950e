"""Latest rows (wire.latest) on the API's side: the state read from them at start, when no
snapshot or peer gave it, and written from the state after each full load from the readings.

Why: the newest reading of 100,000 devices asked of the readings costs InfluxDB 1.6 8-13 s of
CPU at start (per series and field, api.live.snapshot); the same state as rows, a few hundred
series, is read in about a second. Reading them is a full load in every other respect: the
change marks are read first, and every writer stores a batch's rows after its readings and
before its marks, so the rows hold every reading whose mark was read (or a newer one).

Rows are used only once the point that says they are whole (`citysense_latest_complete`) is
there: written when the database was set up empty (common.schema), or by a full load after the
rows of its state (the set-up's, api.live.rebuild, or an API's); until then readings stored
before any writer kept rows have none. Two
registered devices whose ids share a slot (wire.latest.slot_of) may find the other's row there:
both are read from the readings instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from api.core import query as q
from api.core.readings import Value
from api.live.state import LiveState
from common.errors import InfluxNotFound
from common.influx import AsyncInfluxClient, Regex, Series, quote_ident
from device_profiles import Profile
from wire import latest as layout

logger = logging.getLogger(__name__)

# A full load's rows are named by the complete point only if written within this long of its
# start; one of another full load's tags that no point names is dropped once this much older
# (wire.latest): so a tag is never dropped while its point may still be written.
GEN_MAX_AGE_S = 3600
DROP_AFTER_S = 24 * 3600

# The rows of a profile in four queries, by the first hex digit of their bucket: InfluxDB 1.6
# answers one query on one core.
PIECES = tuple(Regex(pattern) for pattern in ("^[0-3]", "^[4-7]", "^[89ab]", "^[c-f]"))


@dataclass(frozen=True, slots=True)
class Chunk:
    """Rows of one answer chunk: what LiveState.load_rows takes. `rows` are InfluxDB's own
    (time, device, at, then the profile's fields in `fields`' order), whose values are taken
    only for the rows that win: with two ingest workers every device has a row of each."""

    device_ids: list[str]
    times: list[int]
    rows: Sequence[Sequence[Value | None]]
    fields: dict[str, int]  # field name: its column in a row
    # Whether a row's `has` was checked (its absent fields are None): its fields are its
    # reading's alone, not an older reading's kept under it (LiveState.load_rows).
    alone: Callable[[Sequence[Value | None]], bool]


@dataclass(frozen=True, slots=True)
class Whole:
    """What the point saying the rows are whole records (wire.latest)."""

    owed: str  # the newest owed mark's stamp its writer saw ("": none)
    full_load: str  # the full load whose rows it vouches for ("": none)


async def complete(influx: AsyncInfluxClient, timeout: float) -> Whole | None:
    """What the point saying the rows are whole records, if they are (see the module's doc):
    the point is there, and no owed mark came after the one it records (wire.latest). No
    `latest` policy (a database set up by an older version): not whole."""
    try:
        found = await q.fetch(influx, q.latest_complete(), timeout=timeout)
    except InfluxNotFound:
        return None
    points = [point for series in found for point in series.rows()]
    if not points:
        return None
    owed = layout.recorded_stamp(points[0])
    if owed != await newest_owed(influx, timeout):
        logger.info("latest rows not used: a writer stored readings without rows since")
        return None
    return Whole(owed, layout.recorded_rows(points[0]))


async def drop_stale(influx: AsyncInfluxClient, named: str, now_s: float, timeout: float) -> int:
    """Drop the rows of every full load but `named` that began over DROP_AFTER_S ago (their
    point, if any, was never written, or was replaced); how many full loads' rows."""
    found = await q.fetch(influx, q.full_loads(), timeout=timeout)
    dropped = 0
    for series in found:
        for value in series.values:
            writer = str(value[1])
            began = layout.full_load_began(writer)
            if writer == named or began is None or now_s - began < DROP_AFTER_S:
                continue
            # `writer` matched the tag's own pattern (digits, hex): nothing to escape.
            await influx.query(
                f"DROP SERIES FROM {quote_ident(layout.MEASUREMENT)} "
                f"WHERE {quote_ident(layout.WRITER_TAG)} = '{writer}'"
            )
            dropped += 1
    return dropped


async def newest_owed(influx: AsyncInfluxClient, timeout: float) -> str:
    """The stamp of the newest owed mark (wire.latest), "" if there is none."""
    try:
        found = await q.fetch(influx, q.newest_owed(), timeout=timeout)
    except InfluxNotFound:
        return ""  # the changes policy missing: no writer stored anything, owed or not
    return layout.newest_stamp(point for series in found for point in series.rows())


def rows_of(profile: Profile, series: Iterable[Series], since_ns: int) -> Chunk:
    """The rows of an answer to q.latest_rows at or after `since_ns`: a device id and reading
    time per row, the row itself, and where each field of the profile is in it (values as
    InfluxDB's JSON gave them: LiveState.load_rows types them)."""
    # Columns: time (the slot), device, at, has, then the fields in the profile's order.
    kept = _within(series, since_ns)
    digest = layout.fields_digest(profile.field_types())
    return Chunk(
        [values[1] for values in kept],
        [values[2] for values in kept],
        _without_absent(profile, digest, kept),
        {name: at for at, name in enumerate(profile.fields, _FIRST_FIELD)},
        _checked(digest),
    )


def row_times(series: Iterable[Series], since_ns: int) -> tuple[list[str], list[int]]:
    """The device ids and reading times of an answer to q.latest_row_times or
    q.full_load_row_times, of the rows at or after `since_ns`."""
    kept = _within(series, since_ns)
    return [values[1] for values in kept], [values[2] for values in kept]


def _within(series: Iterable[Series], since_ns: int) -> list[Sequence[Any]]:
    """The rows (time, device, at, …) with a device id and a reading at or after `since_ns`."""
    return [
        values
        for item in series
        for values in item.values
        if isinstance(values[1], str) and isinstance(values[2], int) and values[2] >= since_ns
    ]


_FIRST_FIELD = 4


def _checked(digest: str) -> Callable[[Sequence[Any]], bool]:
    """Whether a row's `has` names the profile's fields (`digest`): _without_absent then set the
    fields it says the reading lacks to None."""
    ours = f"{digest}:"

    def checked(row: Sequence[Any]) -> bool:
        has = row[_FIRST_FIELD - 1]
        return isinstance(has, str) and has.startswith(ours)

    return checked


def _without_absent(
    profile: Profile, digest: str, kept: list[Sequence[Any]]
) -> list[Sequence[Any]]:
    """The rows with the fields their `has` says the reading lacks as None: an older reading's,
    kept by InfluxDB under a row written again (wire.latest). A row is copied only if one of
    those holds a value: most hold none."""
    count = len(profile.fields)
    # Per `has` seen: the columns it says are absent, and a getter of them as a tuple (C code:
    # a generator over them cost 2.2 µs a row, 0.7 s of a start reading three writers' rows).
    lacking: dict[object, tuple[list[int], Callable[[Sequence[Any]], tuple[Any, ...]]]] = {}
    for n, values in enumerate(kept):
        has = values[_FIRST_FIELD - 1]
        known = lacking.get(has)
        if known is None:
            columns = [_FIRST_FIELD + at for at in layout.absent(has, digest, count)]
            known = lacking[has] = (columns, _getter(columns))
        columns, get = known
        if columns and get(values).count(None) != len(columns):
            row = list(values)
            for at in columns:
                row[at] = None
            kept[n] = row
    return kept


def _getter(columns: list[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """The values at `columns` of a row, always as a tuple (itemgetter gives one value alone,
    and wants one column at least)."""
    if not columns:
        return lambda values: ()
    if len(columns) == 1:
        at = columns[0]
        return lambda values: (values[at],)
    return itemgetter(*columns)


def collided(device_ids: Iterable[str]) -> list[str]:
    """The devices whose (bucket, slot) another of `device_ids` shares: a row there may be
    either's, so their state is read from the readings."""
    owner: dict[int, str] = {}
    shared: set[str] = set()
    for device_id in device_ids:
        other = owner.setdefault(layout.place_of(device_id), device_id)
        if other != device_id:
            shared.update((other, device_id))
    return sorted(shared)


class RowWriter:
    """The state's rows, for one writer tag: encoded some devices at a time (on the event
    loop, so that no reading changes halfway through a row)."""

    def __init__(self, writer: str, profiles: Mapping[str, Profile]) -> None:
        self.writer = writer
        self._keys = {
            name: layout.encoded_keys(profile.measurement, profile.field_types())
            for name, profile in profiles.items()
        }
        self._measurements = {name: p.measurement for name, p in profiles.items()}
        self._series: dict[tuple[str, str], str] = {}

    def lines(self, state: LiveState, indices: Iterable[int]) -> Iterator[str]:
        """The rows of the registered devices at `indices` that hold a reading."""
        for index in indices:
            reading = state.reading_of(index)
            if reading is None:
                continue
            device = state.registered[index]
            bucket, slot = layout.slot_of(device.device_id)
            line, _ = layout.row_line(
                self._series_of(device.profile, bucket),
                device.device_id,
                time_ns=reading.time_ns,
                keys=self._keys[device.profile],
                fields=reading.values,
                slot=slot,
            )
            yield line

    def complete_line(self, now_ns: int, owed: str) -> str:
        """The point saying the rows are whole, these rows among them: at time 0, so there is
        only ever one."""
        return layout.complete_line(self.writer, now_ns, owed, self.writer)

    def _series_of(self, profile: str, bucket: str) -> str:
        key = (profile, bucket)
        known = self._series.get(key)
        if known is None:
            known = self._series[key] = layout.row_series(
                self._measurements[profile], self.writer, bucket
            )
        return known
