"""The rollup keeper: aggregates across devices kept as data in InfluxDB (wire.rollups), so that a
question nobody asked before, or asked after a restart, or of another replica, is one read of a
few hundred points (api.compute.aggregates) instead of seconds of InfluxDB work.

A deployment runs it as a process of its own, `citysense rollups` (api.keeper_cli: its
/metrics, /live, /ready; the compose stack's `rollups` service): its reads, parsing and computing
held the API's event loop and GIL when it ran inside the API, and the API's answers waited for
them. It uses the API's settings, contract and InfluxDB client; every API replica serves what it
writes. `CITYSENSE_API_ROLLUPS_KEEP=true` still runs it as a task inside an API (development,
tests). One keeper is enough; two at once only write the same points.

Rounds run every `api_rollups_every` seconds and also at three moments of each quarter-hour
(`pause`, ROUND_OFFSETS), at once if one passed during a round: half a minute before it begins,
so that its windows (the quarter, and the hour and day beginning with it) are written before
they begin (AHEAD_NS: a window without a rollup is computed from the readings by /aggregates, a
first ask of 0.6 s at 100,000 devices, measured; a window not begun and not marked is written
empty without a read), 10 s before, so that one written earlier is written again and is young
when it begins (REFRESH_NS), and 2 s after, so that the quarter that ended is computed once more,
whole, if readings landed in it since it was last computed. Each round, per profile and grain
(15m, 1h, the day in the open-data time zone):
1. reads the change marks (wire.changes) over every window of the readings, then the signature
   and time of computing of every stored rollup;
2. recomputes each (district, window) whose rollup is missing (the first round backfills every
   window from the profile's oldest reading within the readings' retention: readings loaded
   without marks are covered too; a window beginning within AHEAD_NS is written before it
   begins, and again within REFRESH_NS of it if it was written earlier), or whose marks'
   signature moved since it was computed — for a window still filling, at most every
   `api_rollups_open_every` seconds; a closed window whose marks did not move is not computed
   again, whenever it closed (see _due);
3. computes first, for every profile, the windows that begin within AHEAD_NS or began within
   the last quarter-hour and have none yet, alone (seconds of readings); then, per district
   and day (a unit: the day's
   15-minute and hourly windows and the day itself, or the hours of it holding the due windows),
   from the stored readings: plain reads of the fields' readings in the district,
   `api_rollups_fields_per_read` fields a read (no subquery: InfluxDB 1.x evaluates an
   outer(inner per device) subquery with several fields in minutes, measured: 1.9 s for one
   field of 1,000 lamps over 96 windows, 59 s for three; see compute_rollups for how many fields
   a plain read asks), then one pass per field in Python (api.core.rollups.rollups_of_span), off
   the event loop;
   the open day is computed from its ledger (api.compute.ledger: each device's readings of the
   day up to its last settled hour, kept from the keeper's own reads) and a read of the day
   after it, so it costs what its open hour costs, not a read of the day so far;
   and writes each window whole, one point, overwriting the same series and time: late and
   redelivered readings are counted once by construction, never incremented. So a keeper killed
   mid-round leaves every window either whole or as it was, and the next one computes whatever
   has no current rollup.

Memory: the open day's ledgers (a DeviceSpan per device and field that reported that day); and
about `api_rollups_read_rows` values (rows x the fields a read asks) per concurrent unit
(`api_query_concurrency`): read chunked and computed a batch of whole devices at a time, the
batches' rollups combined (the devices are disjoint) — not a district-day's readings at once; and
the marks and stored signatures of the windows a round looks at (after the first round, those a
reading can still be written into: the lookback).

The marks are read before computing: a write landing meanwhile moves the signature, so the window
is computed again in a later round, and /aggregates, which checks a rollup's stored signature
against the current marks before serving it, never serves it as current meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from api.compute import ledger
from api.compute.cells import Marks
from api.core import query as q
from api.core import rollups as r
from api.core.contract import Contract
from api.core.settings import ApiSettings
from api.core.spans import SpanColumns, device_spans, extend, rollup_of_spans
from api.core.supervise import Supervisor
from api.core.times import NS_PER_S, now_ns
from api.core.windows import Window
from common.errors import InfluxError
from common.influx import AsyncInfluxClient
from common.schema import seconds
from device_profiles import FieldKind, Profile
from wire import rollups as layout
from wire.changes import window_of
from wire.lineproto import line
from wire.retention import policy_of

log = logging.getLogger(__name__)

QUARTER_NS = 900 * NS_PER_S
HOUR_NS = 3600 * NS_PER_S
# A window is written this long before it begins (empty, unless readings are timestamped
# ahead), so that no ask finds a window that began without its rollup: its marks, none yet,
# match, and once readings land in it they move, so it is served under the same max-staleness
# rule as any window still filling, and computed again (open_every; whole once it closed).
AHEAD_NS = 60 * NS_PER_S
# Rounds also start at these moments of each quarter-hour, whatever `api_rollups_every`: half
# AHEAD_NS before one begins (its windows are written before it does), and 2 s after (the
# quarter that just ended is computed again, whole, if its marks moved since it was last
# computed: its last readings are in, ingest writes a batch within a second).
ALIGN_NS = 2 * NS_PER_S
# A read beginning this recently (the open hours of a district, the day after its ledger) asks
# every field at once, whatever `api_rollups_fields_per_read` says (see compute_rollups).
RECENT_READ_NS = 2 * HOUR_NS
# A window's rollup written more than this before it began is written again by a round within
# this of its beginning (empty, without a read, while no reading is in it), and a round starts
# then: at its beginning the rollup is this old plus a round's start, not up to AHEAD_NS. Once
# readings land in it, it is served under max-staleness from its time of computing; written 51 s
# ahead, it was past the 30 s a second after the quarter began, and two first asks computed its
# cells from the readings instead, in 0.7 and 1.8 s (bench.api_bench --boundary 1, run 20).
REFRESH_NS = 10 * NS_PER_S
ROUND_OFFSETS = (ALIGN_NS, QUARTER_NS - AHEAD_NS // 2, QUARTER_NS - REFRESH_NS)
Stored = tuple[int, int, int, int, int]  # sig_s, sig_n, lsig_s, lsig_n, at


def pause(began_ns: int, now: int, every: float) -> float:
    """Seconds until the next round: `every`, or less so that a round starts at each of
    ROUND_OFFSETS into a quarter-hour (every grain's windows start on one), and at once if such
    a moment passed while the round that began at `began_ns` ran."""
    waits = []
    for offset in ROUND_OFFSETS:
        phase = (now - offset) % QUARTER_NS  # since the last such moment
        if now - phase > began_ns:
            return 0.0  # it passed during the round, which did not see what it is for
        waits.append((QUARTER_NS - phase) / NS_PER_S)
    return min(every, *waits)


def has_counters(profile: Profile) -> bool:
    return any(s.effective_kind is FieldKind.COUNTER for s in profile.fields.values())


def signatures(
    marks: Marks, district: str, window: Window, lookback_ns: int
) -> tuple[tuple[int, int], tuple[int, int]]:
    """(the window's own signature, the signature with the counter lookback before it): what a
    rollup's gauges and its counters' increases depend on."""
    return (
        marks.signature([district], window[0], window[1]),
        marks.signature([district], window[0] - lookback_ns, window[1]),
    )


def unit_windows(day: Window) -> dict[str, list[Window]]:
    """The windows one unit of work computes: the day's (in the open-data zone) quarters and
    hours — from the hour holding its start to the hour holding its end, so an hour a zone's
    half-hour offset cuts in two is still whole — and the day."""
    start = day[0] // HOUR_NS * HOUR_NS
    end = -(-day[1] // HOUR_NS) * HOUR_NS
    return {
        "15m": [(t, t + QUARTER_NS) for t in range(start, end, QUARTER_NS)],
        "1h": [(t, t + HOUR_NS) for t in range(start, end, HOUR_NS)],
        "day": [day],
    }


@dataclass
class Plan:
    """What one round computes of a profile: (district, unit) pairs, each a grain's windows."""

    profile: Profile
    marks: Marks  # read before computing (see the module's docstring)
    fresh: list[tuple[str, dict[str, list[Window]]]] = field(default_factory=list)
    rest: list[tuple[str, dict[str, list[Window]]]] = field(default_factory=list)


@dataclass
class Progress:
    """How far the keeper got: for /metrics (citysense_api_rollup*) and the benchmark."""

    rounds: int = 0
    ready: bool = False  # a whole round ended: every window of the readings has a rollup
    pending: int = 0  # (district, day) units found to compute this round, not yet computed
    computed: int = 0  # (district, grain, window) rollups written since start
    backfill_s: float = 0.0  # the first whole round's duration
    failures: int = 0  # rounds InfluxDB failed (retried at the next round)
    failing: bool = False  # the last round failed
    round_s: float = 0.0  # the last whole round's duration
    round_ended: float = 0.0  # when (Unix time) the last whole round ended


class RollupKeeper:
    def __init__(
        self,
        *,
        settings: ApiSettings,
        contract: Contract,
        influx: AsyncInfluxClient,
        supervisor: Supervisor,
    ) -> None:
        self._settings = settings
        self._contract = contract
        self._influx = influx
        self._supervisor = supervisor
        self._task: asyncio.Task[None] | None = None
        self._zone = ZoneInfo(settings.api_open_data_timezone)
        self._lookback = int(settings.api_latest_lookback * NS_PER_S)
        self._oldest: dict[str, int] = {}  # profile -> oldest reading's time, found once
        self._backfilled: set[str] = set()  # profiles whose every window was looked at once
        # (profile, district) -> its ledger of the open day (api.compute.ledger): one each.
        self._ledgers: dict[tuple[str, str], ledger.DayLedger] = {}
        self.progress = Progress()

    def start(self, *, always: bool = False) -> None:
        """Run the rounds as a supervised task: in the API if `api_rollups_keep` says so, or
        `always` (`citysense rollups`, api.keeper_cli)."""
        if always or self._settings.api_rollups_keep:
            self._task = self._supervisor.start(self._run(), "citysense-rollups")

    @property
    def running(self) -> bool:
        """The rounds' task was started and has not ended."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        started = time.monotonic()
        while True:
            began_ns, began = now_ns(), time.monotonic()
            try:
                computed = await self.keep_once()
            except InfluxError as exc:
                # InfluxDB down or slow: the next round tries again; health reports the outage.
                self.progress.failures += 1
                self.progress.failing = True
                log.warning("rollups: round failed, trying again: %s", exc)
            else:
                self.progress.failing = False
                self.progress.round_s = time.monotonic() - began
                self.progress.round_ended = time.time()
                if computed and self.progress.ready:
                    log.info(
                        "rollups: %d windows computed in %.1f s", computed, self.progress.round_s
                    )
                if not self.progress.ready:
                    self.progress.ready = True
                    self.progress.backfill_s = time.monotonic() - started
                    log.info(
                        "rollups ready: %d windows computed in %.1f s",
                        computed,
                        self.progress.backfill_s,
                    )
            await asyncio.sleep(pause(began_ns, now_ns(), self._settings.api_rollups_every))

    async def keep_once(self) -> int:
        """One round over every profile; how many rollups (district, grain, window) it wrote.

        Every profile's windows that begin within AHEAD_NS or began within the last
        quarter-hour and have no rollup yet come first, alone: each is seconds of readings at
        most, and a window that began without its rollup is computed from the readings by
        /aggregates. What else is due (a closed window's last computation, a day's backfill)
        follows."""
        plans = []
        try:
            # Planning inside: a round failing while it plans a later profile must not leave
            # the earlier profiles' units counted as pending, one more round's each failure.
            for profile in self._contract.profiles.values():
                oldest = await self._oldest_reading(profile)
                if oldest is not None:
                    plans.append(await self._plan(profile, oldest))
            computed = 0
            for plan in plans:
                computed += await self._units(plan, plan.fresh)
            begun = [w[0] for p in plans for _, unit in p.fresh for ws in unit.values() for w in ws]
            if begun:  # before (or, in a keeper's first round, after) the newest one began
                ahead = (max(begun) - now_ns()) / NS_PER_S
                log.info(
                    "rollups: %d windows that begin now written, %.1f s %s the newest began",
                    computed,
                    abs(ahead),
                    "before" if ahead >= 0 else "after",
                )
            for plan in plans:
                computed += await self._units(plan, plan.rest)
                self._backfilled.add(plan.profile.profile)
        finally:
            self.progress.pending = 0
        self.progress.rounds += 1
        return computed

    async def _oldest_reading(self, profile: Profile) -> int | None:
        """The profile's oldest reading within the readings' retention (found once: older ones
        only expire). None while it has none."""
        if profile.profile in self._oldest:
            return self._oldest[profile.profile]
        keep = seconds(self._settings.retention_readings)
        since = 0 if keep is None else now_ns() - keep * NS_PER_S
        fields = [n for n, s in profile.fields.items() if s.required] or list(profile.fields)
        answer = await q.fetch_all(self._influx, q.oldest(profile, fields, since))
        times = [int(s.values[0][0]) for result in answer for s in result if s.values]
        if not times:
            return None
        self._oldest[profile.profile] = min(times)
        return min(times)

    async def _plan(self, profile: Profile, oldest: int) -> Plan:
        """What of `profile` this round computes, from the marks and the stored rollups."""
        now = now_ns()
        # The first round looks at every window; later ones only at those a reading can still
        # be written into (ingest refuses readings older than the lookback, the profiles'
        # max_age), so a round's reads stay bounded however long the readings are kept.
        start = oldest
        if profile.profile in self._backfilled:
            start = max(oldest, now - self._lookback)
        days = r.grain_windows("day", start, now + AHEAD_NS, self._zone)
        units = [unit_windows(day) for day in days]
        first = min(u["15m"][0][0] for u in units)
        since = first - self._lookback if has_counters(profile) else first
        # Per-window rows from the lookback on: each window's lookback signature is a sum.
        marks_query = q.changes(
            profile,
            since_ns=window_of(since),
            start_ns=window_of(since),
            end_ns=now + AHEAD_NS + 1,
        )
        marks = Marks.from_series(
            s for result in await q.fetch_all(self._influx, marks_query) for s in result
        )
        stored = {
            grain: await self._stored(profile, grain, first, units[-1]["15m"][-1][1])
            for grain in layout.GRAINS
        }
        tagged = await q.fetch(self._influx, q.district_values(profile))
        districts = sorted(
            {str(row[1]) for s in tagged for row in s.values} | set(marks.districts())
        )
        counters = has_counters(profile)
        plan = Plan(profile, marks)
        for district in districts:
            for unit in units:
                day = unit["day"][0]
                kept = self._ledger(profile, district, day, marks) if day[0] <= now else None
                due = {
                    grain: [
                        w
                        for w in windows
                        if self._due(
                            kept=stored[grain].get(district, {}).get(w[0]),
                            marks=marks,
                            district=district,
                            window=w,
                            now=now,
                            grain=grain,
                            counters=counters,
                            ledgered=kept is not None,
                        )
                    ]
                    for grain, windows in unit.items()
                }
                # Begins within AHEAD_NS or began within the last quarter-hour, never computed:
                # alone, first (its reads are seconds of readings at most; a part would read
                # its whole hour or day).
                fresh = {
                    grain: [
                        w
                        for w in windows
                        if now - w[0] < QUARTER_NS
                        and (
                            (kept_w := stored[grain].get(district, {}).get(w[0])) is None
                            or _written_early(kept_w, w, now)
                        )
                    ]
                    for grain, windows in due.items()
                }
                if any(fresh.values()):
                    plan.fresh.append((district, {g: ws for g, ws in fresh.items() if ws}))
                # The rest, without them: a counter's windows each cost a read of its devices'
                # last readings before, over the lookback; once per round is enough.
                rest = {g: [w for w in ws if w not in fresh[g]] for g, ws in due.items()}
                part = _part(unit, rest)
                if part is not None and kept is not None and "day" in part:
                    part = _after(part, kept.until, rest)
                if part is not None:
                    plan.rest.append((district, part))
        self.progress.pending += len(plan.fresh) + len(plan.rest)
        return plan

    async def _units(self, plan: Plan, todo: list[tuple[str, dict[str, list[Window]]]]) -> int:
        """Compute and write `todo`'s units, `api_query_concurrency` at once; how many windows."""
        gate = asyncio.Semaphore(self._settings.api_query_concurrency)

        async def run(district: str, unit: dict[str, list[Window]]) -> int:
            async with gate:
                written = await self._compute(plan.profile, district, unit, plan.marks)
            self.progress.pending -= 1
            self.progress.computed += written
            return written

        return sum(await asyncio.gather(*(run(d, u) for d, u in todo)))

    def _due(
        self,
        *,
        kept: Stored | None,
        marks: Marks,
        district: str,
        window: Window,
        now: int,
        grain: str,
        counters: bool,
        ledgered: bool = False,
    ) -> bool:
        if window[0] > now:  # not begun: written just before it begins (and again, see REFRESH_NS)
            return window[0] - now <= AHEAD_NS and (
                kept is None or _written_early(kept, window, now)
            )
        if kept is None:
            return True
        sig_s, sig_n, lsig_s, lsig_n, at = kept
        # A window computed while filling and closed since is not computed again unless its
        # marks moved: every reading a rollup lacks moved a mark after the marks it was
        # computed from were read (ingest writes a write's marks after its readings). Computing
        # each closed quarter again regardless cost the round after every quarter-hour an
        # hour's reads per district and field, at the moment dashboards ask (issue 15).
        own, lookback = signatures(marks, district, window, self._lookback)
        moved = own != (sig_s, sig_n) or (counters and lookback != (lsig_s, lsig_n))
        if not moved:
            return False
        if window[1] > now:  # still filling: not at every batch, a day (a day's reads) less often
            every = self._settings.api_rollups_open_every
            if grain == "day" and not ledgered:  # with its ledger, a day costs what an hour does
                every = self._settings.api_rollups_open_day_every
            return (now - at) / NS_PER_S >= every
        return True

    async def _stored(
        self, profile: Profile, grain: str, start: int, end: int
    ) -> dict[str, dict[int, Stored]]:
        """district -> window start -> the stored rollup's signatures and time of computing."""
        query = q.rollups(profile, grain, start_ns=start, end_ns=end, fields=[])
        out: dict[str, dict[int, Stored]] = {}
        for series in await q.fetch(self._influx, query):
            cols = series.columns
            if not set(r.POINT_FIELDS) <= set(cols):
                continue
            at = [cols.index(k) for k in r.POINT_FIELDS]
            kept = out.setdefault(series.tags.get("district", ""), {})
            for row in series.values:
                if row[at[4]] is None:
                    continue
                values = [int(row[i] or 0) for i in at]
                kept[int(row[0])] = (values[0], values[1], values[2], values[3], values[4])
        return out

    async def _compute(
        self, profile: Profile, district: str, unit: dict[str, list[Window]], marks: Marks
    ) -> int:
        """Compute and write the rollups of one district's unit (a day's windows of every
        grain); how many."""
        at = now_ns()  # the marks were read before this: the data is at least as of then
        # Windows that begin within AHEAD_NS are written too (see AHEAD_NS), later ones not.
        unit = {g: [w for w in ws if w[0] <= at + AHEAD_NS] for g, ws in unit.items()}
        unit = {g: ws for g, ws in unit.items() if ws}
        windows = [w for grain_windows in unit.values() for w in grain_windows]
        if not windows:
            return 0
        day = unit["day"][0] if "day" in unit else None
        by_field: dict[str, list[r.FieldRollup]]
        if all(w[0] > at and signatures(marks, district, w, 0)[0] == (0, 0) for w in windows):
            # Not begun, and not one mark in them: nothing was written into them (every write
            # marks its windows; see _due), so they are written empty without a read. Reading
            # them cost InfluxDB as much as reading a filled window (it pays per series, not
            # per point): 10-14 s of the round before each quarter-hour at 100,000 devices.
            by_field = {name: [r.FieldRollup() for _ in windows] for name in profile.fields}
        elif day is not None and day[0] <= at < day[1]:
            small = [w for w in windows if w != day]
            by_field = await self._open_day(
                profile, district, small=small, day=day, marks=marks, at=at
            )
            # The day last, as _open_day returns its rollup last.
            unit = {g: ws for g, ws in unit.items() if g != "day"} | {"day": [day]}
        else:
            computed = await compute_rollups(
                self._influx, self._settings, profile, district, windows
            )
            by_field = computed.rollups
        lines = []
        n = 0
        for grain, grain_windows in unit.items():
            for window in grain_windows:
                own, lookback = signatures(marks, district, window, self._lookback)
                fields = r.to_fields({f: rs[n] for f, rs in by_field.items()}, profile)
                values: dict[str, float | int | bool | str] = {
                    **fields,
                    "sig_s": own[0],
                    "sig_n": own[1],
                    "lsig_s": lookback[0],
                    "lsig_n": lookback[1],
                    "at": at,
                }
                tags = {"profile": profile.measurement, "district": district, "grain": grain}
                lines.append(line(layout.MEASUREMENT, tags, values, window[0]))
                n += 1
        await self._influx.write("\n".join(lines).encode(), policy=policy_of(layout.MEASUREMENT))
        return n

    def _ledger(
        self, profile: Profile, district: str, day: Window, marks: Marks
    ) -> ledger.DayLedger | None:
        """The district's ledger of the open `day`, if the readings it holds are still all
        there are (the marks under it did not move since it was read); else None, and dropped."""
        key = (profile.profile, district)
        kept = self._ledgers.get(key)
        if kept is None or kept.day != day:
            return None
        own, lookback = signatures(marks, district, (day[0], kept.until), self._lookback)
        if own != kept.signatures[0] or (has_counters(profile) and lookback != kept.signatures[1]):
            del self._ledgers[key]
            return None
        return kept

    async def _open_day(
        self,
        profile: Profile,
        district: str,
        *,
        small: list[Window],
        day: Window,
        marks: Marks,
        at: int,
    ) -> dict[str, list[r.FieldRollup]]:
        """Each field's rollups of the `small` windows and, last, of the open `day`, from the
        district's ledger and a read of the day after it (without a ledger: of the whole day,
        from which one is built), the ledger then moved on to the last settled hour."""
        kept = self._ledger(profile, district, day, marks)
        if kept is not None and any(w[0] < kept.until for w in small):
            # Windows before the ledger's end are due (see _after): their counters' increases
            # start from readings before them, not the ledger's, so the whole day is read.
            kept = None
        start = day[0] if kept is None else kept.until
        until = ledger.folded_until(day, start, at)
        cuts = [start, until, day[1]] if until > start else [start, day[1]]
        counters = [n for n, s in profile.fields.items() if s.effective_kind is FieldKind.COUNTER]
        read = SpanRead(cuts, None if kept is None else ledger.previous_of(kept, counters))
        computed = await compute_rollups(
            self._influx, self._settings, profile, district, small, spans=read
        )

        def fold() -> tuple[dict[str, list[r.FieldRollup]], dict[str, SpanColumns]]:
            out, folded = {}, {}
            for name, spec in profile.fields.items():
                spans = computed.spans.get(name) or [{} for _ in cuts[1:]]
                held = ledger.base(kept, name, spec, computed.previous)
                if until > start:
                    held = extend(held, spans[0])
                whole = extend(held, spans[-1])
                day_rollup = rollup_of_spans(spec, whole)
                out[name] = [*computed.rollups.get(name, []), day_rollup]
                folded[name] = held
            return out, folded

        rollups, folded = await asyncio.to_thread(fold)
        own, lookback = signatures(marks, district, (day[0], until), self._lookback)
        self._ledgers[(profile.profile, district)] = ledger.DayLedger(
            day, until, (own, lookback), folded
        )
        return rollups


def _written_early(kept: Stored, window: Window, now: int) -> bool:
    """A window not begun, beginning within REFRESH_NS, whose rollup was computed before that."""
    return now < window[0] <= now + REFRESH_NS and window[0] - kept[4] > REFRESH_NS


def _part(
    unit: dict[str, list[Window]], due: dict[str, list[Window]]
) -> dict[str, list[Window]] | None:
    """What to compute of a unit whose `due` windows need it: the whole unit if its day does
    (a day's readings are read anyway); else the quarters and hours of the hours holding the
    due ones (an open hour costs an hour's reads, not the day's); None if nothing is due."""
    if due.get("day"):
        return unit
    small = [w for grain in ("15m", "1h") for w in due.get(grain, [])]
    if not small:
        return None
    start = min(w[0] for w in small) // HOUR_NS * HOUR_NS
    end = -(-max(w[1] for w in small) // HOUR_NS) * HOUR_NS
    return {
        "15m": [(t, t + QUARTER_NS) for t in range(start, end, QUARTER_NS)],
        "1h": [(t, t + HOUR_NS) for t in range(start, end, HOUR_NS)],
    }


def _after(
    part: dict[str, list[Window]], until: int, due: dict[str, list[Window]]
) -> dict[str, list[Window]]:
    """A unit's part whose open day has a ledger up to `until`: its quarters and hours from
    `until` on, and the day (computed from the ledger and a read from `until`), unless a
    quarter or hour before `until` is due itself (its marks moved, so the ledger is stale
    too, or its rollup is missing): then the whole part, which rebuilds the ledger."""
    if any(w[0] < until for grain in ("15m", "1h") for w in due.get(grain, [])):
        return part
    return {g: [w for w in ws if g == "day" or w[0] >= until] for g, ws in part.items()}


@dataclass(frozen=True, slots=True)
class SpanRead:
    """What a read also keeps, for an open day's ledger (api.compute.ledger): each device's
    DeviceSpans between consecutive `cuts`; a counter's increases start from `previous` (the
    ledger's) instead of a read of the last readings before the first cut."""

    cuts: list[int]
    previous: dict[str, dict[str, float]] | None = None


@dataclass(slots=True)
class Computed:
    rollups: dict[str, list[r.FieldRollup]]  # field -> its rollup of each window, in order
    spans: dict[str, list[ledger.Spans]]  # field -> each span's DeviceSpans (a SpanRead's)
    previous: dict[str, dict[str, float]]  # counter field -> device -> reading before the read


async def compute_rollups(
    influx: AsyncInfluxClient,
    settings: ApiSettings,
    profile: Profile,
    district: str,
    windows: list[Window],
    *,
    spans: SpanRead | None = None,
) -> Computed:
    """Each field's rollup of each window (in order), of one district, from the stored
    readings: a read of `api_rollups_fields_per_read` fields' readings at a time over the
    windows' span (and `spans`' cuts; a counter's last reading before it, within the lookback,
    in a read of its own), then api.core.rollups.rollups_of_span per field in a thread, so the
    event loop keeps serving meanwhile.

    How many fields a read: InfluxDB 1.x pays mostly per series and per query, so one read of
    every field costs it a quarter of the CPU of a read per field (`python -m
    bench.keeper_reads`); but a read stays open, every series' and field's cursor with it, while
    the keeper computes between its chunks, and in the full benchmark with live readings one
    read of every field held everyone else's queries up for seconds (README, "The rollup
    keeper's reads"): so one field a read by default — except reads beginning within
    RECENT_READ_NS, which hold little per series and recur every few seconds with live
    readings: every field at once.

    The readings come chunked, and are computed a batch of whole devices at a time (about
    `api_rollups_read_rows` values) and combined (r.combine: the devices of two batches are
    disjoint): what one unit holds is bounded by that, not by a district-day of readings —
    except the DeviceSpans `spans` asks for, one per device and field."""
    names = list(profile.fields)
    step = settings.api_rollups_fields_per_read
    begin = min([w[0] for w in windows] + (spans.cuts[:1] if spans is not None else []))
    if now_ns() - begin <= RECENT_READ_NS:
        # Every field at once: a read of the last hour or two holds a reading or two per
        # series, so it is not held open while the keeper computes; and with live readings
        # these reads come back every `api_rollups_open_every` seconds for every district.
        step = len(names)
    out = Computed({}, {}, {})
    for k in range(0, len(names), step):
        part = await _fields_rollups(
            influx,
            settings,
            profile,
            district=district,
            windows=windows,
            names=names[k : k + step],
            spans=spans,
        )
        out.rollups |= part.rollups
        out.spans |= part.spans
        out.previous |= part.previous
    return out


async def _fields_rollups(
    influx: AsyncInfluxClient,
    settings: ApiSettings,
    profile: Profile,
    *,
    district: str,
    windows: list[Window],
    names: list[str],
    spans: SpanRead | None,
) -> Computed:
    """compute_rollups of some of the fields, from one read of them."""
    cuts = spans.cuts if spans is not None else []
    start = min([w[0] for w in windows] + cuts[:1])
    end = max([w[1] for w in windows] + cuts[-1:])
    rows = max(settings.api_rollups_read_rows // len(names), 1)
    counters = [n for n in names if profile.fields[n].effective_kind is FieldKind.COUNTER]
    out = Computed(
        {name: [r.FieldRollup() for _ in windows] for name in names},
        {name: [{} for _ in cuts[1:]] for name in names},
        {},
    )
    # A counter's last reading before the span (its first increase starts there): read only
    # once the span holds a reading — a read over the whole lookback, which a window without
    # readings (one written before it begins) never needs — unless a ledger holds it.
    previous: dict[str, dict[str, float]] | None = None if counters else {}
    if spans is not None and spans.previous is not None:
        previous = {name: spans.previous.get(name, {}) for name in counters}
    readings = q.unit_readings(profile, names, district, start, end)
    # InfluxDB plans every series and field of the read before its first chunk: under load,
    # past influx_timeout (a round of ReadTimeouts at 100,000 devices), so the load's bound.
    async for batch in device_batches(influx, readings, rows, settings.api_load_timeout):
        if previous is None:
            since = start - int(settings.api_latest_lookback * NS_PER_S)
            span = (since, start)
            previous = await _last_before(influx, profile, counters, district, span)
        part = await asyncio.to_thread(
            _batch_rollups,
            profile,
            names,
            batch,
            previous=previous,
            windows=windows,
            cuts=cuts,
        )
        for name in names:
            total = out.rollups[name]
            pairs = zip(total, part.rollups[name], strict=True)
            out.rollups[name] = [r.combine(ab) for ab in pairs]
            for mine, theirs in zip(out.spans[name], part.spans[name], strict=True):
                mine.update(theirs)  # the devices of two batches are disjoint
    if previous is None and spans is not None:
        # No reading in the span, but a ledger is built from it: the readings after it start
        # their increases from these.
        span = (start - int(settings.api_latest_lookback * NS_PER_S), start)
        previous = await _last_before(influx, profile, counters, district, span)
    out.previous = previous or {}
    return out


async def _last_before(
    influx: AsyncInfluxClient,
    profile: Profile,
    counters: list[str],
    district: str,
    span: Window,
) -> dict[str, dict[str, float]]:
    """counter field -> device -> its last reading in [since, start) of `span`."""
    since, start = span
    out: dict[str, dict[str, float]] = {}
    for name in counters:
        query = q.last_before(profile, name, district, since, start)
        out[name] = {
            s.tags.get("device_id", ""): float(s.values[0][1])
            for s in await q.fetch(influx, query)
            if s.values
        }
    return out


def _batch_rollups(
    profile: Profile,
    names: list[str],
    batch: list[tuple[str, list[tuple[int, Any]]]],
    *,
    previous: dict[str, dict[str, float]],
    windows: list[Window],
    cuts: list[int],
) -> Computed:
    """Each field's rollups (and DeviceSpans between `cuts`, if any) of a batch of devices
    whose rows are the read's (time, then the fields in `names`' order, None where a reading
    lacks one): what a read of that field alone would have returned."""
    out = Computed({}, {}, previous)
    for k, name in enumerate(names):
        before = previous.get(name, {})
        devices = []
        for device, device_rows in batch:
            values = [(t, row[k + 1]) for t, row in device_rows if row[k + 1] is not None]
            if values:
                devices.append((device, before.get(device), values))
        spec = profile.fields[name]
        out.rollups[name] = r.rollups_of_span(
            spec, ((p, v) for _, p, v in devices), windows, QUARTER_NS
        )
        out.spans[name] = device_spans(spec, devices, cuts) if cuts else []
    return out


async def device_batches(
    influx: AsyncInfluxClient, query: q.Query, rows: int, timeout: float
) -> AsyncIterator[list[tuple[str, list[tuple[int, Any]]]]]:
    """(device, its time-ordered rows: (time, the row as InfluxDB sent it, time first)) of a
    query grouped by device, in batches of whole devices of at least `rows` rows (the last one
    fewer), read in chunks of `rows`: a device's series longer than a chunk comes in
    consecutive parts, joined here."""
    batch: list[tuple[str, list[tuple[int, Any]]]] = []
    held = 0
    async for chunk in q.fetch_chunks(influx, query, rows, timeout):
        for series in chunk:
            device = series.tags.get("device_id", "")
            values = [(int(row[0]), row) for row in series.values]  # not copied per row
            if batch and batch[-1][0] == device:
                batch[-1][1].extend(values)  # the rest of a series cut by a chunk
            else:
                if held >= rows:
                    yield batch
                    batch, held = [], 0
                batch.append((device, values))
            held += len(values)
    if batch:
        yield batch
