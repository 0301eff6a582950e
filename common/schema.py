"""The database's shape, created (or brought in line with configuration) at start: the database,
one retention policy per class of data (wire.retention) and the hourly roll-ups into
`long_term` (computed once a day: `DAILY`). Idempotent; run by ingest at start and by
`citysense schema` (the compose stack's one-shot `influxdb-init`, as InfluxDB's admin).

Durations are InfluxQL's (`90d`, `12w`, `400d`, `INF` for ever); InfluxDB refuses less than 1h.
A policy's duration is what a reading older than it gets: InfluxDB drops it when its shard group
is wholly older (so up to one shard group's length later: 1h for policies under 2 days, a day up
to six months, a week beyond).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, BaseModel

from common.influx import InfluxClient, Series, quote_ident
from wire import latest
from wire.retention import (
    AGGREGATES,
    ALARMS,
    CHANGES,
    DEAD_LETTERS,
    LATEST,
    LONG_TERM,
    READINGS,
    qualified,
)

_DURATION = re.compile(r"^(INF|[1-9][0-9]*[hdw])$")
ROLLUP_EVERY = "1h"  # the roll-ups' buckets
# One continuous query per profile and piece of its devices, not one per profile. InfluxDB runs a
# query GROUP BY every tag with a cursor per series and field, all opened at once: one profile's
# hourly roll-up of 200,000 water pipes took it from 4.2 to past 16.7 GB in two minutes (and the
# streetlights are 600,000), starving everything else on the machine. It runs a database's
# continuous queries one after another, so cut by the last two characters of the device id
# (each of ROLLUP_CLASSES classes: a city's numbered ids spread evenly), a query rolls up about
# 1/ROLLUP_CLASSES² of a profile's devices; one more query takes any id outside those classes.
# Not more pieces: each pattern costs InfluxDB a pass over the measurement's ids, measured at
# 5 to 15 s a query at 200,000 to 600,000 devices (a piece of 6,000 streetlights took 35 s).
ROLLUP_CLASSES = 5
# Every character a device id may hold (device_profiles.model.DEVICE_ID), digits first.
ID_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_.:-"


@dataclass(frozen=True, slots=True)
class Resample:
    """When InfluxDB runs the roll-ups (`every`, aligned to the epoch: UTC midnight for a day),
    and how many hours before the run each pass rolls up again (`span`)."""

    every: str
    span: str

    @property
    def clause(self) -> str:
        # As InfluxDB shows it back in SHOW CONTINUOUS QUERIES (checked: 1h, 2h, 1d, 2d are
        # kept as written), so a definition of another schedule is found by its text.
        return f"RESAMPLE EVERY {self.every} FOR {self.span}"


# Once a day, at midnight UTC, over the two days before. A pass costs InfluxDB per series it
# touches as much as per row it writes: bench.rollups (20,000 devices, a reading an hour) had
# an hourly pass at 1.1 ms of CPU a row written and a daily one at 0.26 ms, a day of hourly
# passes 4.3 times the CPU of one daily pass (README, "The roll-ups once a day"). The
# roll-ups answer only buckets older than the readings' retention
# (api.compute.history.long_term_cutoff), so a day old is soon enough. Each hour is rolled up
# by two passes, so its readings that arrive up to a day late still count (a spool drained
# after a day's outage); later ones are in `readings` only. When it starts InfluxDB runs a
# pass over the 47 hours before: one that missed a midnight loses no hour if back before
# 23:00 the day after (the hourly pass lost every hour it was down but the last).
DAILY = Resample("1d", "2d")
# Readings kept under two days are in shard groups of an hour, which InfluxDB may drop before a
# daily pass reads them: those are rolled up each hour, over the two hours before it.
HOURLY = Resample("1h", "2h")


def rollup_resample(readings: str) -> Resample:
    """The roll-ups' schedule for readings kept `readings` (a checked duration)."""
    kept = seconds(readings)
    return DAILY if kept is None or kept >= 2 * 86400 else HOURLY


def check_duration(value: str) -> str:
    if not _DURATION.match(value):
        raise ValueError(f"retention {value!r}: a whole number of h, d or w, or INF")
    return value


Duration = Annotated[str, AfterValidator(check_duration)]
_SECONDS = {"h": 3600, "d": 86400, "w": 7 * 86400}


def seconds(duration: str) -> int | None:
    """A checked duration in seconds; None for INF (kept for ever)."""
    if check_duration(duration) == "INF":
        return None
    return int(duration[:-1]) * _SECONDS[duration[-1]]


class Retention(BaseModel):
    """How long each class of data is kept."""

    readings: Duration = "400d"
    dead_letters: Duration = "90d"
    # Longer than any profile's max_age (30d in the shipped profiles): no reading can be
    # written into a window whose change mark has already expired.
    changes: Duration = "40d"
    alarms: Duration = "400d"
    long_term: Duration = "INF"

    def policies(self) -> dict[str, str]:
        return {
            READINGS: self.readings,
            DEAD_LETTERS: self.dead_letters,
            CHANGES: self.changes,
            ALARMS: self.alarms,
            LONG_TERM: self.long_term,
            # Rollups across devices (wire.rollups) live exactly as long as the readings: a
            # rollup older than its readings could not be recomputed, one younger would make
            # old windows fall back to computing from the readings.
            AGGREGATES: self.readings,
            # Each device's newest reading as a row (wire.latest): for ever, since a row's
            # time is its slot in 1970; a device's row is overwritten, so they do not pile up.
            LATEST: "INF",
        }


@dataclass(frozen=True, slots=True)
class SchemaReport:
    created: tuple[str, ...]
    altered: tuple[str, ...]
    rows_whole: bool = False  # this call said the latest rows are whole (an empty database)


def ensure_schema(
    client: InfluxClient, retention: Retention, profiles: Iterable[str]
) -> SchemaReport:
    """Database, policies (readings the default) and roll-ups of each profile's readings."""
    db = quote_ident(client.config.database)
    client.create_database()
    existing = _policies(client)
    created: list[str] = []
    altered: list[str] = []
    for name, duration in retention.policies().items():
        default = " DEFAULT" if name == READINGS else ""
        verb = "ALTER" if name in existing else "CREATE"
        if verb == "ALTER" and existing[name] == (duration, name == READINGS):
            continue
        tail = ("" if verb == "ALTER" else " REPLICATION 1") + default
        target = f"{quote_ident(name)} ON {db}"
        client.query(f"{verb} RETENTION POLICY {target} DURATION {duration}{tail}")
        (altered if verb == "ALTER" else created).append(name)
    measurements = sorted(set(profiles))
    _ensure_rollups(client, measurements, created, rollup_resample(retention.readings))
    whole = declare_rows_whole_if_empty(client, measurements)
    return SchemaReport(tuple(created), tuple(altered), whole)


# Our own constant identifiers, quoted: nothing here comes from outside.
_COMPLETE_POINT = f"SELECT * FROM {qualified(latest.COMPLETE)} LIMIT 1"  # noqa: S608
_NEWEST_OWED = f"SELECT * FROM {qualified(latest.OWED)} ORDER BY time DESC LIMIT 1"  # noqa: S608
_DELETE_COMPLETE = f"DELETE FROM {quote_ident(latest.COMPLETE)}"  # noqa: S608


def declare_rows_whole_if_empty(client: InfluxClient, measurements: Iterable[str]) -> bool:
    """The point saying the latest rows are whole (wire.latest) written, if it is not there and
    no measurement of `measurements` (the profiles' readings) holds a series; whether written.

    Why: an empty database's rows trivially hold every reading, and every writer of readings
    (ingest's workers, their spools' drainers, replay) keeps rows from its first batch on, so
    the API's first start reads the rows, not the newest point of every series, which at
    100,000 devices costs InfluxDB seconds of CPU (bench.api_memory: the full load against the
    start from the rows). Anything else (an older version's database, readings brought in by
    other means) leaves the rows to a full load to make whole. Measurements are asked of the
    whole database (the profiles' roll-ups in `long_term` count too): a doubt reads in full.
    Run before any writer of this set-up stores readings; a restart between the question and
    the write asks again."""
    if any(series.values for series in _first(client.query(_COMPLETE_POINT))):
        return False
    # Before the measurements: a writer whose rows are off storing its first readings between
    # the two leaves a mark newer than the one recorded.
    owed = _first(client.query(_NEWEST_OWED))
    stamp = latest.newest_stamp(point for series in owed for point in series.rows())
    shown = _first(client.query(f"SHOW MEASUREMENTS ON {quote_ident(client.config.database)}"))
    names = {str(row[0]) for series in shown for row in series.values}
    if names & set(measurements):
        return False
    client.write(latest.complete_line("schema", time.time_ns(), stamp).encode(), policy=LATEST)
    return True


IMPORT = "import"  # the writer an import's owed mark names


def withdraw_rows_whole(client: InfluxClient) -> None:
    """The point saying the latest rows are whole taken back: readings were written by other
    means (an import, a restore of the readings alone), so the rows are built from the readings
    again, by `citysense schema --readings-imported` (api.live.rebuild) or else by the API's
    next start. An owed mark first (wire.latest): a full load or compaction under way, which
    read the newest mark before, then writes no point over the deletion."""
    client.write(latest.owed_line(IMPORT).encode(), policy=CHANGES)
    client.query(_DELETE_COMPLETE)


def _first(results: list[list[Series]]) -> list[Series]:
    return results[0] if results else []


def _ensure_rollups(
    client: InfluxClient, profiles: list[str], created: list[str], resample: Resample
) -> None:
    """Each profile's roll-up queries created on `resample`'s schedule; its older ones (one for
    the whole profile, as before they were cut, pieces no longer cut so, or on another
    schedule) dropped."""
    db = quote_ident(client.config.database)
    queries = _continuous_queries(client)
    current = {name for name, text in queries.items() if resample.clause in text}
    for profile in profiles:
        wanted = {f"rollup_{profile}_{suffix}": ids for suffix, ids in rollup_pieces()}
        ours = re.compile(rf"^rollup_{re.escape(profile)}(_(\d+|rest))?$")
        for name in sorted(queries):
            if ours.match(name) and (name not in wanted or name not in current):
                client.query(f"DROP CONTINUOUS QUERY {quote_ident(name)} ON {db}")
        for name, ids in wanted.items():
            if name not in current:
                client.query(rollup_query(client.config.database, name, profile, ids, resample))
                created.append(name)


def _char_class(chars: str) -> str:
    return "[" + "".join("\\" + c if c in "-\\]^" else c for c in chars) + "]"


def rollup_pieces() -> list[tuple[str, str]]:
    """(name suffix, condition on device_id) of each roll-up query of a profile: every id
    matches exactly one (ids are cut by the class of their last, and last but one, character)."""
    classes = [ID_CHARS[k::ROLLUP_CLASSES] for k in range(ROLLUP_CLASSES)]
    tag = quote_ident("device_id")
    out = []
    for k, last_but_one in enumerate(classes):
        # An id of one character goes with the first class of the character before it.
        before = f"(?:^|{_char_class(last_but_one)})" if k == 0 else _char_class(last_but_one)
        for j, last in enumerate(classes):
            number = k * ROLLUP_CLASSES + j
            out.append((f"{number:03d}", f"{tag} =~ /{before}{_char_class(last)}$/"))
    every = _char_class(ID_CHARS)
    out.append(("rest", f"{tag} !~ /(?:^|{every}){every}$/"))
    return out


def rollup_query(database: str, name: str, measurement: str, ids: str, resample: Resample) -> str:
    """Hourly mean, min, max and count of every numeric field (count of every field) per
    series of the devices whose id matches `ids` (a condition of `rollup_pieces`), into the
    same measurement in `long_term`, for long windows and dashboards; run on `resample`."""
    db = quote_ident(database)
    return (
        f"CREATE CONTINUOUS QUERY {quote_ident(name)} ON {db} "
        f"{resample.clause} BEGIN "
        f"{rollup_select(database, measurement, ids)} GROUP BY time({ROLLUP_EVERY}), * END"
    )


def rollup_select(database: str, measurement: str, where: str = "") -> str:
    """The roll-up's SELECT … INTO (a continuous query's body, without its GROUP BY); `where`
    a condition on device ids (a piece's) and, to run it by hand over past hours, on time."""
    db, target = quote_ident(database), quote_ident(measurement)
    source = f"{db}.{quote_ident(READINGS)}.{target}"
    into = f"{db}.{quote_ident(LONG_TERM)}.{target}"
    condition = f" WHERE {where}" if where else ""
    # Names are quoted identifiers of our own measurements; nothing here comes from a request.
    return f"SELECT mean(*), min(*), max(*), count(*) INTO {into} FROM {source}{condition}"  # noqa: S608


def _policies(client: InfluxClient) -> dict[str, tuple[str, bool]]:
    """Existing policies: name → (duration as we write it, is default)."""
    result = client.query(f"SHOW RETENTION POLICIES ON {quote_ident(client.config.database)}")
    rows = [row for series in (result[0] if result else []) for row in series.rows()]
    return {str(r["name"]): (_as_written(str(r["duration"])), bool(r["default"])) for r in rows}


def _as_written(shown: str) -> str:
    """InfluxDB shows `9600h0m0s` for our `400d`: back to whole days or hours, 0s as INF."""
    hours = int(shown.split("h", 1)[0]) if "h" in shown else 0
    if hours == 0:
        return "INF"
    return f"{hours // 24}d" if hours % 24 == 0 else f"{hours}h"


def _continuous_queries(client: InfluxClient) -> dict[str, str]:
    """The database's continuous queries: name → definition, as InfluxDB shows it."""
    result = client.query("SHOW CONTINUOUS QUERIES")
    found: dict[str, str] = {}
    for series in result[0] if result else []:
        if series.name == client.config.database:
            found.update((str(row["name"]), str(row["query"])) for row in series.rows())
    return found
