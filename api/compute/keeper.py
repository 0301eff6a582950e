"""The rollup keeper: aggregates across devices kept as data in InfluxDB (wire.rollups), so that a
question nobody asked before, or asked after a restart, or of another replica, is one read of a
few hundred points (api.compute.aggregates) instead of seconds of InfluxDB work.

An asyncio task in the API, run by one replica (`CITYSENSE_API_ROLLUPS_KEEP=true`): it shares the
API's contract, settings and InfluxDB client, and needs no process of its own to deploy; every
replica serves what it writes. Each round, per profile and grain (15m, 1h, the day in the
open-data time zone):
1. reads the change marks (wire.changes) over every window of the readings, then the signature
   and time of computing of every stored rollup;
2. recomputes each (district, window) whose rollup is missing (the first round backfills every
   window from the profile's oldest reading within the readings' retention: readings loaded
   without marks are covered too), whose window closed after its rollup was computed, or whose
   marks' signature moved since — for a window still filling, at most every
   `api_rollups_open_every` seconds;
3. computes from the stored readings, one query per district (across_devices' fast shape), and
   writes each window whole, overwriting the same series and time: late and redelivered
   readings are counted once by construction, never incremented.

The marks are read before computing: a write landing meanwhile moves the signature, so the window
is computed again in a later round, and /aggregates, which checks a rollup's stored signature
against the current marks before serving it, never serves it as current meanwhile.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from api.compute.cells import Marks
from api.core import query as q
from api.core import rollups as r
from api.core.contract import Contract
from api.core.counters import deltas
from api.core.settings import ApiSettings
from api.core.supervise import Supervisor
from api.core.times import NS_PER_S, now_ns
from api.core.windows import Window, fixed_grid
from common.errors import InfluxError
from common.influx import AsyncInfluxClient, ParamValue
from common.schema import seconds
from device_profiles import FieldKind, Profile
from wire import rollups as layout
from wire.changes import window_of
from wire.lineproto import line
from wire.retention import policy_of

log = logging.getLogger(__name__)

# Windows computed by one query: a day of 15-minute windows, two days of hours, a week of days.
# Bounds the size of one InfluxDB answer and of what one district's computation holds.
CHUNK = {"15m": 96, "1h": 48, "day": 7}
Stored = tuple[int, int, int, int, int]  # sig_s, sig_n, lsig_s, lsig_n, at


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


@dataclass
class Progress:
    """How far the keeper got: for /metrics (citysense_api_rollup_*) and the benchmark."""

    rounds: int = 0
    ready: bool = False  # a whole round ended: every window of the readings has a rollup
    pending: int = 0  # windows found to compute in the current round, not yet computed
    computed: int = 0  # windows computed since start
    backfill_s: float = 0.0  # the first whole round's duration


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
        self.progress = Progress()

    def start(self) -> None:
        if self._settings.api_rollups_keep:
            self._task = self._supervisor.start(self._run(), "citysense-rollups")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        started = time.monotonic()
        while True:
            try:
                computed = await self.keep_once()
            except InfluxError as exc:
                # InfluxDB down or slow: the next round tries again; health reports the outage.
                log.warning("rollups: round failed, trying again: %s", exc)
            else:
                if not self.progress.ready:
                    self.progress.ready = True
                    self.progress.backfill_s = time.monotonic() - started
                    log.info(
                        "rollups ready: %d windows computed in %.1f s",
                        computed,
                        self.progress.backfill_s,
                    )
            await asyncio.sleep(self._settings.api_rollups_every)

    async def keep_once(self) -> int:
        """One round over every profile and grain; how many windows were computed."""
        computed = 0
        for profile in self._contract.profiles.values():
            oldest = await self._oldest_reading(profile)
            if oldest is None:
                continue
            now = now_ns()
            # The first round looks at every window; later ones only at those a reading can
            # still be written into (ingest refuses readings older than the lookback, the
            # profiles' max_age), so a round's reads stay bounded however long data is kept.
            start = oldest
            if profile.profile in self._backfilled:
                start = max(oldest, now - self._lookback)
            spans = {g: r.grain_windows(g, start, now, self._zone) for g in layout.GRAINS}
            first = min(ws[0][0] for ws in spans.values())
            since = first - self._lookback if has_counters(profile) else first
            # Per-window rows from the lookback on: each window's lookback signature is a sum.
            marks_query = q.changes(
                profile, since_ns=window_of(since), start_ns=window_of(since), end_ns=now + 1
            )
            marks = Marks.from_series(
                s for result in await q.fetch_all(self._influx, marks_query) for s in result
            )
            tagged = await q.fetch(self._influx, q.district_values(profile))
            districts = sorted(
                {str(row[1]) for s in tagged for row in s.values} | set(marks.districts())
            )
            for grain, windows in spans.items():
                computed += await self._keep(
                    profile, grain, windows, marks=marks, districts=districts, now=now
                )
            self._backfilled.add(profile.profile)
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

    async def _keep(
        self,
        profile: Profile,
        grain: str,
        windows: list[Window],
        *,
        marks: Marks,
        districts: list[str],
        now: int,
    ) -> int:
        settings = self._settings
        counters = has_counters(profile)
        stored = await self._stored(profile, grain, windows[0][0], windows[-1][1])
        todo: dict[str, list[int]] = defaultdict(list)
        for district in districts:
            kept = stored.get(district, {})
            for n, window in enumerate(windows):
                if self._due(
                    kept=kept.get(window[0]),
                    marks=marks,
                    district=district,
                    window=window,
                    now=now,
                    counters=counters,
                ):
                    todo[district].append(n)
        pending = sum(len(ns) for ns in todo.values())
        self.progress.pending += pending
        gate = asyncio.Semaphore(settings.api_query_concurrency)

        async def run(district: str, part: list[int]) -> None:
            async with gate:
                await self._compute(profile, grain, district, [windows[n] for n in part], marks)
            self.progress.pending -= len(part)
            self.progress.computed += len(part)

        jobs = [
            run(district, part) for district, ns in todo.items() for part in _runs(ns, CHUNK[grain])
        ]
        try:
            await asyncio.gather(*jobs)
        finally:
            self.progress.pending = 0
        return pending

    def _due(
        self,
        *,
        kept: Stored | None,
        marks: Marks,
        district: str,
        window: Window,
        now: int,
        counters: bool,
    ) -> bool:
        if kept is None:
            return True
        sig_s, sig_n, lsig_s, lsig_n, at = kept
        if at < window[1] <= now:
            return True  # computed while filling, closed since: once more, whole
        own, lookback = signatures(marks, district, window, self._lookback)
        moved = own != (sig_s, sig_n) or (counters and lookback != (lsig_s, lsig_n))
        if not moved:
            return False
        if window[1] > now:  # still filling: not at every batch
            return (now - at) / NS_PER_S >= self._settings.api_rollups_open_every
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
        self, profile: Profile, grain: str, district: str, windows: list[Window], marks: Marks
    ) -> None:
        """Compute and write the rollups of consecutive windows of one district."""
        at = now_ns()  # the marks were read before this: the data is at least as of then
        by_window = await compute_rollups(self._influx, self._settings, profile, district, windows)
        lines = []
        for window in windows:
            own, lookback = signatures(marks, district, window, self._lookback)
            values: dict[str, float | int | bool | str] = {
                **r.to_fields(by_window.get(window[0], {}), profile),
                "sig_s": own[0],
                "sig_n": own[1],
                "lsig_s": lookback[0],
                "lsig_n": lookback[1],
                "at": at,
            }
            tags = {"profile": profile.measurement, "district": district, "grain": grain}
            lines.append(line(layout.MEASUREMENT, tags, values, window[0]))
        await self._influx.write("\n".join(lines).encode(), policy=policy_of(layout.MEASUREMENT))


def _runs(ns: Sequence[int], size: int) -> list[list[int]]:
    """Consecutive indices in runs of at most `size`."""
    out: list[list[int]] = []
    for n in ns:
        if out and out[-1][-1] == n - 1 and len(out[-1]) < size:
            out[-1].append(n)
        else:
            out.append([n])
    return out


async def compute_rollups(
    influx: AsyncInfluxClient,
    settings: ApiSettings,
    profile: Profile,
    district: str,
    windows: list[Window],
) -> dict[int, dict[str, r.FieldRollup]]:
    """Window start -> field -> rollup, of one district over consecutive windows, from the
    stored readings: the gauges' stats and the devices' last values in InfluxDB, the counters'
    increases here from their readings (api.core.counters, as the existing path does)."""
    grid = fixed_grid(windows)
    equals: list[tuple[str, ParamValue]] = [
        (name, value) for name, spec in profile.fields.items() for value in r.eq_values(spec)
    ]
    query = q.rollup_compute(
        profile,
        windows,
        every_s=None if grid is None else grid[0],
        offset_s=0 if grid is None else grid[1],
        district=district,
        equals=equals,
    )
    results = await q.fetch_all(influx, query)
    out: dict[int, dict[str, r.FieldRollup]] = defaultdict(dict)
    starts = [w[0] for w in windows]
    per = 1 + len(equals)  # statements per span: the stats, then one per (field, value)
    for k, result in enumerate(results):
        span, which = divmod(k, per)
        for series in result:
            for row in series.values:
                begin = starts[span] if grid is None else _start(starts, int(row[0]))
                rollups = out[begin]
                if which == 0:
                    for name, got in r.from_columns(series.columns, row, profile).items():
                        rollups[name] = got
                else:
                    name, value = equals[which - 1]
                    if row[1] is not None:
                        got = rollups.setdefault(name, r.FieldRollup())
                        got.eq[r.equals_key(value)] = int(row[1])
    for name, spec in profile.fields.items():
        if spec.effective_kind is FieldKind.COUNTER:
            await _increases(
                influx,
                settings=settings,
                profile=profile,
                field=name,
                district=district,
                windows=windows,
                out=out,
            )
    return out


def _start(starts: list[int], stamp: int) -> int:
    """The start of the window holding `stamp` (a GROUP BY time() row's stamp)."""
    return starts[max(0, bisect.bisect_right(starts, stamp) - 1)]


async def _increases(
    influx: AsyncInfluxClient,
    *,
    settings: ApiSettings,
    profile: Profile,
    field: str,
    district: str,
    windows: list[Window],
    out: dict[int, dict[str, r.FieldRollup]],
) -> None:
    start, end = windows[0][0], windows[-1][1]
    query = q.counter_readings_all(
        profile,
        field,
        start_ns=start,
        end_ns=end,
        since_ns=start - int(settings.api_latest_lookback * NS_PER_S),
        districts=[district],
    )
    before, inside = await q.fetch_all(influx, query)
    previous = {s.tags.get("device_id", ""): float(s.values[0][1]) for s in before if s.values}
    for series in inside:
        readings = [(int(t), float(v)) for t, v in series.values]
        device = series.tags.get("device_id", "")
        for window, delta in zip(
            windows, deltas(previous.get(device), readings, windows), strict=True
        ):
            if delta is not None:
                got = out[window[0]].setdefault(field, r.FieldRollup())
                got.inc += delta
                got.incn += 1
