"""The live side of the API process: the state cache, the MQTT subscriber feeding it, the hub
pushing its changes, and the background task that judges reporting status and reconciles with
InfluxDB. `Live.start()` / `Live.stop()` run in the app's lifespan.

Reconciling is a catch-up (api.live.coverage): every `api_state_reconcile_interval` the change
marks are read and only the (profile, district) parts with a mark neither loaded nor vouched for
by the feed are queried again, from that window; a full reload only every
`api_state_full_reload_interval`, for what no mark shows. A start from the snapshot is the same
catch-up after the messages the broker kept for our session while we were away."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import socket
import time
from array import array
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Iterator, Sequence
from typing import TypeVar

import httpx

from api.core import query as q
from api.core import series_split
from api.core.contract import Contract
from api.core.readings import Reading, readings_by_device
from api.core.settings import ApiSettings
from api.core.supervise import Supervisor
from api.core.times import NS_PER_S, now_ns
from api.live import compact, rows, snapshot
from api.live.alarms import AlarmBook, Outbox, Writer, load_events
from api.live.broker import BrokerProbe
from api.live.coverage import Coverage, Marks, Token
from api.live.feed import FeedSubscriber
from api.live.hub import Hub
from api.live.peer import PeerError, fetch_state
from api.live.state import LiveState
from common.errors import InfluxError, InfluxNotFound, InfluxUnavailable
from common.influx import AsyncInfluxClient, Regex, Series, redacted
from common.process import release_free_memory
from wire import changes as changes_layout
from wire import latest as layout
from wire import statefeed
from wire.changes import window_of
from wire.retention import LATEST

logger = logging.getLogger(__name__)

RETRY_LOAD_S = 2.0  # until the first load succeeded
LOAD_SLICE = 2000  # rows (devices) of a chunk of InfluxDB's answer, merged between two yields
# Feed readings applied between two yields to the event loop: a feed message of 500 readings
# (and the alarms they raise) applied at once would fill every SSE client's queue before any
# client had a turn to drain it, disconnecting clients that keep up.
FEED_SLICE = 50
# A partial snapshot file this old is a killed writer's, not one another replica is writing now.
_PARTIAL_SNAPSHOT_AGE_S = 600.0
# How long the start from a snapshot waits for the state feed's subscription before it catches
# up from InfluxDB regardless (a broker that is down must not keep the API from serving).
SUBSCRIBE_WAIT_S = 10.0
# After subscribing, the broker sends the messages it kept for our session at once: the catch-up
# waits until none came for FEED_QUIET_S (at most FEED_DRAIN_MAX_S). Only a cost rides on it: a
# message not yet applied leaves its part to be queried again.
FEED_QUIET_S = 0.2
FEED_DRAIN_MAX_S = 10.0
# A catch-up compares the marks with what the feed brought this long after reading them: the
# announcement of a write follows its mark by milliseconds.
FEED_SETTLE_S = 0.5
LOST_CATCH_UP_S = 2.0
# Alarms and transitions emitted between two looks at the alarm outbox (_emit_due): their
# events, ~300 B each at most, fit in half the smallest outbox allowed (64 KB).
EMIT_SLICE = 100
JUDGE_SLICE = 1000  # devices whose newest reading is judged between two pauses, after a start
JUDGE_PAUSE_S = 0.002  # requests first: the pass is not urgent
COLLIDED_SLICE = 200  # devices named in one query of the readings
# Reads of the latest rows while the point names other rows after each (a replica's compaction
# every few seconds would be needed to use them up): then the readings.
RENAMED_TRIES = 3
_T = TypeVar("_T")
ROWS_REQUEST_BYTES = 4 * 1024 * 1024  # latest rows a request, under InfluxDB's body limit


class Live:
    def __init__(
        self,
        settings: ApiSettings,
        contract: Contract,
        influx: AsyncInfluxClient,
        scrub: Callable[[str], str],
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        supervisor: Supervisor | None = None,
        peer: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.supervisor = supervisor or Supervisor()
        self._peer_transport = peer  # to `api_state_peer` (tests: another app in process)
        self.settings = settings
        self.scrub = scrub  # error texts may quote a URL with credentials
        self.contract = contract
        self.influx = influx
        self.hub = Hub(settings.api_stream_queue)
        self.broker = BrokerProbe(
            settings.mqtt, settings.api_health_timeout, settings.api_health_probe_every
        )
        self.state = LiveState(
            contract,
            self.hub,
            late_after=settings.api_late_after,
            silent_after=settings.api_silent_after,
        )
        self.alarms = AlarmBook(
            contract,
            self.hub,
            history=settings.api_alarm_history,
            outbox=Outbox(settings.api_alarm_outbox_bytes),
            replayed=False,  # until start's replay of the stored events
        )
        self.alarm_replays_failed = 0
        self.writer = Writer(settings.influx, self.alarms, scrub, transport)
        self.load_error: str | None = "not loaded yet"
        self.feed: FeedSubscriber | None = None
        self._task: asyncio.Task[None] | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._feed_task: asyncio.Task[None] | None = None
        # Bounded by the subscriber (api_feed_backlog); None: the feed stopped, nothing follows.
        self._feed: asyncio.Queue[statefeed.Message | None] = asyncio.Queue()
        self.caught_up = 0  # catch-ups done, and the parts they queried (metrics, tests)
        # Where the state this process started with came from: its own snapshot, a peer's
        # (api.live.peer), the latest rows (api.live.rows) or InfluxDB's readings in full;
        # logged, and asked by the tests.
        self.started_from: str | None = None
        self.parts_queried = 0
        self.caught_up_from = "readings"  # or "latest rows" (a start's catch-up: catch_up)
        self._feed_started = 0.0
        self._applying = False  # a feed message taken off the queue, not yet applied whole
        # Whether the start's wait for the broker's kept messages ended with them applied
        # (True) or at FEED_DRAIN_MAX_S (False); None: no such wait (metrics, tests).
        self.drained_at_start: bool | None = None
        self._gate = asyncio.Semaphore(settings.api_query_concurrency)
        # What the state is complete for: the start of the last load or catch-up, the change
        # marks read just before it, and what the feed vouched for since (api.live.coverage).
        self._as_of = 0
        self.coverage = Coverage()
        self._fingerprinted: str | None = None
        self._splits = series_split.Splits(contract, settings.api_load_series)
        # The rows of the last full load's state are due: the newest owed mark's stamp seen
        # before it read the readings (wire.latest); None when none are due.
        self._rows_due: str | None = None
        self._rows_task: asyncio.Task[None] | None = None
        self._judge_task: asyncio.Task[None] | None = None
        self._judge_due = False  # the newest readings to judge, once the app serves
        self._serving = False
        # Called with every feed message once its readings are applied (the SensorThings MQTT
        # publisher); one that raises ends the feed's task, which the supervisor reports.
        self.listeners: list[Callable[[list[statefeed.Announced]], None]] = []

    @property
    def rows_due(self) -> bool:
        """Whether the rows of the last full load's state are yet to be written (tests)."""
        return self._rows_due is not None

    def require_loaded(self) -> None:
        """Serving an empty cache as "no device ever reported" would be a lie: 503 instead."""
        if not self.state.loaded:
            raise InfluxUnavailable(f"latest state not loaded from InfluxDB yet: {self.load_error}")

    async def reload(self, *, from_rows: bool = False) -> None:
        """Latest reading of every device from InfluxDB, merged into the cache (newest wins),
        then, when a data folder is set, a snapshot of the state written (api.live.snapshot).
        `from_rows`: from the latest rows if they are whole (api.live.rows), else, and always
        for the periodic full reload, from the readings, whose rows are then written.

        One query per profile and stored district, a few at a time: at 100,000 devices one
        query per profile kept a single InfluxDB core busy for seconds while the other idled.
        Each answer is streamed (InfluxDB's chunked answer, LOAD_SLICE devices a chunk), each
        chunk parsed and merged as it arrives, with a yield to the event loop between chunks:
        parsed whole, the answers held hundreds of MB of transient objects at 100,000 devices
        and blocked requests and live events for seconds."""
        began, clock = now_ns(), time.perf_counter()
        since = began - int(self.settings.api_latest_lookback * NS_PER_S)
        # Read before the readings: a write stored after them changed a mark (snapshot's doc).
        token = self.coverage.begin()
        marks = await self._read_marks(since)
        if from_rows:
            merged_rows = await self._load_rows(since)
            if merged_rows is not None:
                self._loaded_from(began, marks, token)
                self.started_from = "rows"
                logger.info(
                    "latest state loaded for %d devices from InfluxDB's latest rows (%d rows) "
                    "in %.1f s",
                    len(self.state.devices),
                    merged_rows,
                    time.perf_counter() - clock,
                )
                await self.save_snapshot()
                return

        # Before the readings: an owed mark stored after this may be over readings it misses.
        owed = await rows.newest_owed(self.influx, self.settings.api_load_timeout)
        # Rows already whole hold every reading a writer of this version stored: this load's
        # rows would only add a writer's worth of rows to every later start's read.
        whole = await rows.complete(self.influx, self.settings.api_load_timeout)
        queries, merged = await self._load_readings(since)
        first = not self.state.loaded
        self._loaded_from(began, marks, token)
        self._rows_due = None if whole else owed  # this state's rows make them whole
        if first:
            self.started_from = "influxdb"
            logger.info(
                "latest state loaded for %d devices from InfluxDB in full (%d parts in %d "
                "queries, %d readings) in %.1f s%s",
                len(self.state.devices),
                len(queries),
                self._queries(queries),
                merged,
                time.perf_counter() - clock,
                "" if self.settings.api_data_dir else " (no data folder: no snapshot)",
            )
        await self.save_snapshot()

    async def _load_readings(self, since: int) -> tuple[list[tuple[str, str | None, int]], int]:
        """The newest reading at or after `since` of every device, from the readings: one part
        per profile and stored district; (the parts, readings merged)."""

        async def parts(name: str) -> list[str | None]:
            async with self._gate:
                found = await q.fetch(self.influx, q.district_values(self.contract.profiles[name]))
            # No district tag stored yet: one query for the whole measurement.
            return [str(row[1]) for series in found for row in series.values] or [None]

        profiles = sorted(self.contract.profiles)
        districts = await asyncio.gather(*(parts(name) for name in profiles))
        queries = [
            (name, district, since)
            for name, names in zip(profiles, districts, strict=True)
            for district in names
        ]
        return queries, await self._load_parts(queries)

    def _queries(self, parts: Sequence[tuple[str, str | None, int]]) -> int:
        return sum(len(self._splits.of(name, district)) for name, district, _ in parts)

    async def rows_from_readings(self) -> tuple[int, bool]:
        """The latest rows built from the readings, in a process that serves nothing (the
        set-up's build, api.live.rebuild): the full load's reading part, then its rows and the
        point saying they are whole, as after an API's full load, without the alarms, snapshot
        or feed of a serving one; (devices with a reading, whether the point was written)."""
        since = now_ns() - int(self.settings.api_latest_lookback * NS_PER_S)
        owed = await rows.newest_owed(self.influx, self.settings.api_load_timeout)
        clock = time.perf_counter()
        queries, merged = await self._load_readings(since)
        logger.info(
            "newest readings of %d devices read (%d parts in %d queries) in %.1f s",
            merged,
            len(queries),
            self._queries(queries),
            time.perf_counter() - clock,
        )
        return merged, await self._write_rows(owed)

    async def _load_rows(self, since: int, profiles: Collection[str] | None = None) -> int | None:
        """The state from the latest rows (api.live.rows) of `profiles` (all by default), and
        the devices whose slot another shares from their readings; how many rows, or None if
        the rows are not whole."""
        timeout = self.settings.api_load_timeout
        whole = await rows.complete(self.influx, timeout)
        if whole is None:
            return None
        names = sorted(self.contract.profiles if profiles is None else profiles)
        # Hashing every registered id (0.2-0.3 s at 100,000) while InfluxDB works on the rows.
        collided = asyncio.create_task(asyncio.to_thread(self._collided))
        try:
            merged = await self._merge_named_rows(names, whole, since)
        finally:
            shared = await collided
        if merged is None:
            return None
        for name, devices in shared.items():
            if name not in names:
                continue
            profile = self.contract.profiles[name]
            for start in range(0, len(devices), COLLIDED_SLICE):
                query = q.latest_readings(
                    profile, since, device_ids=devices[start : start + COLLIDED_SLICE]
                )
                async with self._gate:
                    found = readings_by_device(profile, await q.fetch(self.influx, query))
                self.state.load(name, found.items(), now_ns())
        return merged

    async def _merge_named_rows(
        self, names: Sequence[str], whole: rows.Whole, since: int
    ) -> int | None:
        """The rows of `names` merged into the state, read again while the point names other
        rows once they are read: another replica's compaction or full load names its own and
        then drops a replaced full load's rows over a day old (api.live.rows.drop_stale), maybe
        while this read them. Once the point still names what was read, every row was there.
        How many rows were merged, or None if the rows are not whole any more."""
        merged = 0
        for _ in range(RENAMED_TRIES):
            pieces = [
                self._merge_rows(name, buckets, whole.full_load, since)
                for name in names
                for buckets in rows.PIECES
            ]
            merged += sum(await _all(pieces))
            again = await rows.complete(self.influx, self.settings.api_load_timeout)
            if again is None:
                return None
            if again.full_load == whole.full_load:
                return merged
            logger.info("latest rows renamed while read (%s): read again", again.full_load)
            whole = again
        return None  # renamed at every try: the readings instead

    async def _merge_rows(self, name: str, buckets: Regex, full_load: str, since: int) -> int:
        """One piece of a profile's rows (every writer's and `full_load`'s) merged into the
        state, a chunk at a time; how many rows."""
        merged = 0
        profile = self.contract.profiles[name]
        query = q.latest_rows(profile, buckets, full_load)
        async with self._gate:
            async for series in self._row_chunks(query):
                found = rows.rows_of(profile, series, since)
                self.state.load_rows(
                    name, found.device_ids, found.times, found.rows, found.fields, alone=found.alone
                )
                merged += len(found.device_ids)
                await asyncio.sleep(0)
        return merged

    def _row_chunks(self, query: q.Query) -> AsyncIterator[list[Series]]:
        """An answer of latest rows, LOAD_SLICE rows a chunk, uncompressed unless set
        otherwise (`api_rows_compressed`: few series of many rows, where gzip costs CPU)."""
        timeout = self.settings.api_load_timeout
        compressed = self.settings.api_rows_compressed
        return q.fetch_chunks(self.influx, query, LOAD_SLICE, timeout, compressed=compressed)

    def _collided(self) -> dict[str, list[str]]:
        """Per profile, its registered devices whose slot another device shares."""
        shared = rows.collided(d.device_id for d in self.state.registered)
        found: dict[str, list[str]] = {}
        for device_id in shared:
            device = self.contract.device(device_id)
            if device is not None:
                found.setdefault(device.profile, []).append(device_id)
        if shared:
            logger.info("%d devices share a latest row's slot: read from readings", len(shared))
        return found

    async def _write_rows(self, owed: str) -> bool:
        """The state's rows (api.live.rows) as a new full load's, then the point saying the
        rows are whole with them; whether that point was written."""
        writer = self._full_load_rows()
        await self._send_rows(writer, range(len(self.state.registered)))
        return await self._vouch(writer, owed, None)

    def _full_load_rows(self) -> rows.RowWriter:
        return rows.RowWriter(layout.full_load_tag(int(time.time())), self.contract.profiles)

    async def _send_rows(self, writer: rows.RowWriter, indices: Sequence[int]) -> None:
        """The rows of the devices at `indices` (those with a reading), a slice of devices at
        a time on the event loop, a request every few MB."""
        clock = time.perf_counter()
        written, lines, body = 0, [], 0
        for start in range(0, len(indices), LOAD_SLICE):
            for text in writer.lines(self.state, indices[start : start + LOAD_SLICE]):
                lines.append(text)
                body += len(text) + 1
            if body >= ROWS_REQUEST_BYTES or start + LOAD_SLICE >= len(indices):
                if lines:
                    await self.influx.write("\n".join(lines).encode(), policy=LATEST)
                written += len(lines)
                lines, body = [], 0
            await asyncio.sleep(0)
        release_free_memory()  # the requests' bodies, MBs each (common.process)
        logger.info(
            "latest rows of %d devices written as %s in %.1f s",
            written,
            writer.writer,
            time.perf_counter() - clock,
        )

    async def _vouch(self, writer: rows.RowWriter, owed: str, replaces: str | None) -> bool:
        """The point saying the rows are whole with `writer`'s, having seen `owed` as the
        newest owed mark, written if that is still the newest and, for a compaction, the point
        still names `replaces`; whether written. Then full loads' rows no point names dropped."""
        timeout = self.settings.api_load_timeout
        began = layout.full_load_began(writer.writer) or 0
        if time.time() - began > rows.GEN_MAX_AGE_S:
            # Past that, another replica may drop these rows as no point's (api.live.rows).
            logger.warning("latest rows not said whole: written over %d s", rows.GEN_MAX_AGE_S)
            if replaces is None:
                self._settled(owed)  # not again for this load: the next full load tries
            return False
        if replaces is not None:
            now = await rows.complete(self.influx, timeout)
            if now is None or now.full_load != replaces:
                logger.info("latest rows not compacted: the rows changed meanwhile")
                return False
        elif await rows.newest_owed(self.influx, timeout) != owed:
            # A writer stored readings without rows since the load began: this state may
            # lack them, so the rows are not said whole (the next full load tries again).
            logger.warning("latest rows not whole: a writer stored readings without rows")
            self._settled(owed)  # not again for this load: the next full load tries
            return False
        complete = writer.complete_line(now_ns(), owed)
        await self.influx.write(complete.encode(), policy=LATEST)
        self._settled(owed)  # only now: a failure above is tried again at the next reconcile
        try:
            dropped = await rows.drop_stale(self.influx, writer.writer, time.time(), timeout)
        except InfluxError as exc:
            # The rows are whole all the same; the next point written drops them.
            logger.warning("could not drop full loads' rows: %s", self.scrub(str(exc)))
        else:
            if dropped:
                logger.info("rows of %d full loads no point names dropped", dropped)
        return True

    def _settled(self, owed: str) -> None:
        """The rows due for the load that read `owed` are written, or given up on: no longer
        due, unless a later full load made rows of its own due meanwhile (they are written
        from the state, which holds that load's readings, at the next round)."""
        if self._rows_due == owed:
            self._rows_due = None

    async def compact_rows(self) -> int | None:
        """The named full load's rows written again for only the devices no other writer has
        a row as new for (api.live.compact); how many, or None if not done (the rows not whole,
        no full load named, or nothing to gain)."""
        timeout = self.settings.api_load_timeout
        whole = await rows.complete(self.influx, timeout)
        if whole is None or not whole.full_load:
            return None
        size = len(self.state.registered)
        newest, named = compact.newest_unknown(size), compact.newest_unknown(size)
        # Rows older than the lookback are none of the state's, and no start loads them.
        since = now_ns() - int(self.settings.api_latest_lookback * NS_PER_S)
        for name in sorted(self.contract.profiles):
            profile = self.contract.profiles[name]
            for buckets in rows.PIECES:
                query = q.latest_row_times(profile, buckets)
                await self._row_times(query, since, newest)
                query = q.full_load_row_times(profile, buckets, whole.full_load)
                await self._row_times(query, since, named)
        times = self.state.times()
        late = compact.behind(times, newest, named)
        if late:
            logger.warning(
                "latest rows not compacted: %s holds newer rows of %d devices than this "
                "state (loaded before they were written; a full reload takes them)",
                whole.full_load,
                late,
            )
            return None
        due = compact.uncovered(times, newest)
        held = compact.held(named)
        if len(due) >= held:
            return None  # nothing to gain: the named rows are as few already
        writer = self._full_load_rows()
        await self._send_rows(writer, due)
        if not await self._vouch(writer, whole.owed, whole.full_load):
            return None
        logger.info(
            "latest rows compacted: %s's %d rows replaced by %s's %d",
            whole.full_load,
            held,
            writer.writer,
            len(due),
        )
        return len(due)

    async def _row_times(self, query: q.Query, since: int, into: array[int]) -> None:
        """The rows' reading times at or after `since` an answer to `query` holds, into `into`
        (api.live.compact)."""
        async with self._gate:
            async for series in self._row_chunks(query):
                device_ids, times = rows.row_times(series, since)
                compact.take_rows(into, self.state.index, device_ids, times)
                await asyncio.sleep(0)

    async def _try_compact_rows(self) -> None:
        try:
            await self.compact_rows()
        except InfluxError as exc:
            # The point still names the rows it named: whole as they were. Tried again later.
            logger.warning("could not compact the latest rows: %s", self.scrub(str(exc)))
        finally:
            self._rows_task = None

    async def _try_write_rows(self, owed: str) -> None:
        try:
            await self._write_rows(owed)
        except InfluxError as exc:
            # Not whole yet (the point is written last): the next start loads from the
            # readings. Tried again at the next reconcile.
            logger.warning("could not write the latest rows: %s", self.scrub(str(exc)))
        finally:
            self._rows_task = None

    async def _load_parts(self, queries: Sequence[tuple[str, str | None, int]]) -> int:
        """Latest readings of each (profile, district or all, since), merged; how many."""
        merged = 0

        async def latest(
            name: str, district: str | None, since: int, ids: Regex | None, others: Regex | None
        ) -> None:
            nonlocal merged
            profile = self.contract.profiles[name]
            query = q.latest_readings(
                profile, since, district=district, ids_matching=ids, ids_not_matching=others
            )
            async with self._gate:
                chunks = q.fetch_chunks(
                    self.influx, query, LOAD_SLICE, self.settings.api_load_timeout
                )
                async for series in chunks:
                    found = readings_by_device(profile, series)
                    self.state.load(name, found.items(), now_ns())
                    merged += len(found)
                    await asyncio.sleep(0)

        await _all(
            [
                latest(name, district, since, *piece)
                for name, district, since in queries
                for piece in self._splits.of(name, district)
            ]
        )
        return merged

    def _loaded_from(self, as_of_ns: int, marks: Marks, token: Token) -> None:
        """The state now holds every reading stored before `as_of_ns` and, when `marks` are
        given, every write whose mark was among them."""
        self._as_of = as_of_ns
        self.coverage.merged(marks, token)
        if not self.state.loaded:
            now = now_ns()
            self.state.baseline(now)
            self._judge_alarms_at_start(now)
        self.load_error = None

    def _judge_alarms_at_start(self, now: int) -> None:
        """Once the state is loaded and the stored alarms replayed, whichever comes last: the
        replayed ones judged against the state, the devices silent at start raised."""
        if not self.alarms.replayed:
            return  # done by _try_replay_alarms once it succeeds

        def newest(device_id: str) -> Reading | None:
            device = self.state.devices.get(device_id)
            return None if device is None else device.reading

        self.alarms.reconcile(newest, self.state.judged_silent, now)
        self.alarms.silent_at_start(self.state.silent(), now)
        self._emit_due()
        self._judge_due = True
        self._start_judging()

    def serving(self) -> None:
        """The app serves (its start-up done): the work held back from the start begins."""
        self._serving = True
        self._start_judging()

    def _start_judging(self) -> None:
        # Not during the start (_judge_newest's doc).
        if self._serving and self._judge_due and self._judge_task is None:
            self._judge_due = False
            self._judge_task = self.supervisor.start(self._judge_newest(), "citysense-judge-newest")

    async def _judge_newest(self) -> None:
        """Each device's newest reading judged against its profile's rules: a breach stored
        while no API judged it (every replica down, a redeploy) is raised now, at its
        reading's time, not at a later reading that may not come for hours; one with a
        duration starts its wait there. Judged again, a reading whose alarm is active (read
        back) or was cleared since changes nothing. Once the app serves, a slice at a time
        with a pause for requests between slices: at 100,000 devices the pass is 0.4-0.5 s of
        CPU, which no start should wait for (measured: interleaved with the start, it made
        bench.api_memory's starts 0.3-1.6 s slower)."""
        state = self.state
        for start in range(0, len(state.registered), JUDGE_SLICE):
            for index in range(start, min(start + JUDGE_SLICE, len(state.registered))):
                device = state.registered[index]
                if not self.contract.profiles[device.profile].alarms:
                    continue
                reading = state.reading_of(index)
                if reading is not None:
                    self.alarms.evaluate(
                        device.device_id, device.profile, reading.time_ns, reading.values
                    )
            await asyncio.sleep(JUDGE_PAUSE_S)

    async def _try_replay_alarms(self) -> None:
        """The stored alarm events into the book. InfluxDB failing, the book judges nothing
        and /alarms answers 503 (api.live.alarm_queries) until a later try (_run) succeeds:
        judged meanwhile, an alarm active in InfluxDB would be raised again under a new id,
        and a clear lost (the device back meanwhile) never come."""
        since = now_ns() - int(self.settings.api_alarm_lookback * NS_PER_S)
        try:
            async for found in load_events(self.influx, since):
                self.alarms.replay(found)
        except InfluxNotFound:
            pass  # no `alarms` policy yet (a database set up by an older version): none stored
        except InfluxError as exc:
            if self.alarm_replays_failed == 0:
                logger.warning(
                    "could not replay alarm events, trying again: %s", self.scrub(str(exc))
                )
            self.alarm_replays_failed += 1
            return
        if self.alarm_replays_failed:
            logger.info("alarm events replayed after %d failed tries", self.alarm_replays_failed)
        self.alarms.replayed = True
        if self.state.loaded:
            self._judge_alarms_at_start(now_ns())

    def _emit_due(self) -> None:
        """The alarms of devices silent at start, then the reporting transitions due, some at
        a time while the alarm outbox is not half full. A storm — a million devices silent
        at once — waits here for InfluxDB to take the events the slices before it made, a
        few seconds late, rather than overflowing the outbox. While InfluxDB refuses them
        everything is emitted as before (live clients are not held back by a database
        outage) and the outbox drops its oldest past its bound, counted."""
        outbox, writer, state = self.alarms.outbox, self.writer, self.state
        now = now_ns()
        while not (writer.storing and outbox.crowded):
            if self.alarms.raise_silent_at_start(state.judged_silent, EMIT_SLICE):
                continue
            if not state.tick(now, limit=EMIT_SLICE):
                return

    async def _read_marks(self, since: int) -> Marks:
        """The change marks of every window holding a time at or after `since` (a window's mark
        is stamped at its start, up to 15 minutes before the readings it announces)."""
        marks: Marks = {}
        query = q.all_changes(window_of(since))
        async with self._gate:
            chunks = q.fetch_chunks(self.influx, query, LOAD_SLICE, self.settings.api_load_timeout)
            try:
                async for found in chunks:
                    for series in found:
                        key = (series.tags.get("profile", ""), series.tags.get("district", ""))
                        windows = marks.setdefault(key, {})
                        windows.update(_identities(series))
            except InfluxNotFound:
                # No policy for the marks: ingest has not set the database up yet, so nothing
                # was written with marks (a database that is missing fails the load after this).
                return {}
        return marks

    def snapshot_parts(self) -> list[bytes]:
        """The state, the marks it is complete for and what the feed vouched for since, as
        snapshot bytes: for the data folder, and for a replica starting from ours (api.live.peer).
        On the event loop: no feed message is applied halfway through."""
        return snapshot.encode(
            self.state,
            self._fingerprint(),
            self._as_of,
            self.coverage.synced,
            now_ns(),
            feed=self.coverage.dump(),
        )

    async def save_snapshot(self) -> None:
        """The state and the marks it is complete for, to the data folder (if any)."""
        folder = self.settings.api_data_dir
        if folder is None or not self.state.loaded:
            return
        clock = time.perf_counter()
        data = self.snapshot_parts()
        try:
            written = await asyncio.to_thread(
                snapshot.write, folder, data, self.settings.api_snapshot_max_bytes
            )
        except OSError as exc:
            logger.warning("state snapshot not written to %s: %s", folder, exc)
            return
        if written:
            logger.debug(
                "state snapshot written: %d bytes in %.2f s",
                sum(len(p) for p in data),
                time.perf_counter() - clock,
            )

    def _fingerprint(self) -> str:
        # The registry and profiles are fixed for the process's life: hashed once (a million
        # device ids take a good part of a second).
        if self._fingerprinted is None:
            self._fingerprinted = snapshot.fingerprint(self.state, self.settings.influx_db)
        return self._fingerprinted

    async def _start_from_snapshot(self) -> None:
        """Restore the snapshot, if one is there and sound, then query InfluxDB only for the
        (profile, district) parts whose change marks moved since. Any reason not to trust it
        is logged and leaves the state as it was: the full load follows."""
        folder = self.settings.api_data_dir
        if folder is None:
            return
        await asyncio.to_thread(snapshot.sweep, folder, _PARTIAL_SNAPSHOT_AGE_S, time.time())
        clock = time.perf_counter()
        try:
            data = snapshot.read(folder, self.settings.api_snapshot_max_bytes)
            restored = snapshot.restore(
                self.state,
                self._fingerprint(),
                data,
                now_ns(),
                self.settings.api_snapshot_max_age,
            )
        except snapshot.Refused as exc:
            # Expected on a first start; anything else says something is wrong with the file.
            level = logging.INFO if isinstance(exc, snapshot.Missing) else logging.WARNING
            then = "asking the peer" if self.settings.api_state_peer else "loading in full"
            logger.log(level, "state snapshot in %s not used (%s): %s", folder, exc, then)
            return
        read_s = time.perf_counter() - clock
        self.coverage.load(restored.marks, restored.feed)
        assert self.feed is not None
        self.feed.expect_session = True
        # Only now: a message applied before the restore would be overwritten by it.
        self._start_feed()
        await self._subscribed()
        found = await self._caught_up_after("snapshot")
        if found is None:
            return
        queries, merged = found
        logger.info(
            "latest state of %d devices from the snapshot in %s (%d bytes, as of %.0f s ago, "
            "read in %.2f s), the feed's kept messages (%s) and InfluxDB (%d changed profile "
            "and district parts, %d %s) in %.2f s",
            len(self.state.devices),
            folder,
            restored.size,
            (now_ns() - restored.as_of_ns) / NS_PER_S,
            read_s,
            self._vouched(),
            queries,
            merged,
            self.caught_up_from,
            time.perf_counter() - clock,
        )

    async def _caught_up_after(self, source: str) -> tuple[int, int] | None:
        """After a restored state (`source`: its own snapshot or a peer's), its coverage loaded
        and the feed's messages being applied: wait for the kept ones, then catch up from
        InfluxDB; (parts, readings), or None (logged) if InfluxDB failed — the state stays not
        loaded and the full load is retried. No snapshot is written here: the one restored is as
        good for the next start (the messages taken since show as a gap then, caught up by
        their marks; a peer is asked again), and writing one would hold a copy of every column
        at the start's peak."""
        self.drained_at_start = await self._drained()
        try:
            found = await self.catch_up(save=False, settle=False)
        except InfluxError as exc:
            self.load_error = self.scrub(str(exc))
            logger.warning("could not catch up after the %s's state: %s", source, self.load_error)
            return None
        self.started_from = source
        return found

    def _vouched(self) -> str:
        return "vouched for" if self.coverage.trusted else "not trusted: a message may be lost"

    async def _start_from_peer(self) -> None:
        """Start from a running replica's state (`api_state_peer`, api.live.peer), when this
        one has no snapshot of its own, then catch up as after a restart. Why it is whole: our
        subscription began before the peer encoded its state, so every message announced
        after that state reaches us, held unapplied until the state is restored (the restore
        replaces the columns); the peer's own messages among them are known by their numbers
        and skipped (api.live.coverage), and a message the peer had not yet taken when it
        answered is either among ours or shows as a gap. Any failure is logged and the full
        load follows."""
        peer = self.settings.api_state_peer
        if peer is None:
            return
        assert self.feed is not None
        self._start_subscriber()
        await self._subscribed()
        clock = time.perf_counter()
        token = self.settings.api_state_peer_token
        try:
            data = await fetch_state(
                peer,
                None if token is None else token.get_secret_value(),
                timeout=self.settings.api_load_timeout,
                max_bytes=self.settings.api_snapshot_max_bytes,
                transport=self._peer_transport,
            )
            restored = snapshot.restore(
                self.state,
                self._fingerprint(),
                data,
                now_ns(),
                self.settings.api_snapshot_max_age,
            )
            del data  # tens of MB at a million devices: not held while catching up
        except (PeerError, snapshot.Refused) as exc:
            logger.warning(
                "state of %s not used (%s): loading in full", redacted(peer), self.scrub(str(exc))
            )
            return
        fetched_s = time.perf_counter() - clock
        self.coverage.load(restored.marks, restored.feed)
        if not self.feed.subscribed.is_set():
            self.coverage.lost("not subscribed when the peer's state was taken")
        self._start_applying()
        found = await self._caught_up_after("peer")
        if found is None:
            return
        queries, merged = found
        logger.info(
            "latest state of %d devices from %s (%d bytes, fetched in %.2f s), the feed (%s) "
            "and InfluxDB (%d changed profile and district parts, %d %s) in %.2f s",
            len(self.state.devices),
            redacted(peer),
            restored.size,
            fetched_s,
            self._vouched(),
            queries,
            merged,
            self.caught_up_from,
            time.perf_counter() - clock,
        )

    async def _subscribed(self) -> None:
        """Readings stored before the subscription took effect, and announced before it, reach
        us only through the marks read after it: they must be read after it."""
        assert self.feed is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.feed.first_attempt.wait(), SUBSCRIBE_WAIT_S)
        if not self.feed.subscribed.is_set():
            logger.warning(
                "state feed not subscribed; loading without it (the catch-ups and the full "
                "reload cover what the feed misses)"
            )
            # Whatever is announced before the subscription takes effect is not ours: its
            # first connection counts as a loss (a catch-up follows), session or none.
            self.feed.expect_session = True

    async def _drained(self) -> bool:
        """Until the messages the broker kept for our session have come and been applied (at
        most FEED_DRAIN_MAX_S); whether they have. They come at once, as fast as they are
        applied, and keep the queue full while they last; a live city's messages come and go.
        So: the queue empty and nothing being applied at every look for FEED_QUIET_S, not "no
        message for FEED_QUIET_S", which a city whose workers announce a few batches a second
        each seldom leaves (a restart then waited the whole maximum)."""
        assert self.feed is not None
        deadline = time.monotonic() + FEED_DRAIN_MAX_S
        idle_since: float | None = None
        while time.monotonic() < deadline:
            now = time.monotonic()
            if not self._feed.empty() or self._applying:
                idle_since = None
            elif idle_since is None:
                idle_since = now
            elif now - idle_since >= FEED_QUIET_S:
                return True
            await asyncio.sleep(FEED_QUIET_S / 4)
        logger.info(
            "state feed still busy after %.0f s at start: catching up regardless (a message "
            "not applied yet costs its part a query)",
            FEED_DRAIN_MAX_S,
        )
        return False

    async def catch_up(self, *, save: bool = True, settle: bool = True) -> tuple[int, int]:
        """Query InfluxDB for the parts whose marks moved past what the state holds (loaded, or
        vouched for by the feed), from their earliest such window; (parts, readings) merged."""
        began = now_ns()
        since = began - int(self.settings.api_latest_lookback * NS_PER_S)
        token = self.coverage.begin()
        marks = await self._read_marks(since)
        if settle:  # at start, _drained has waited already: not half a second more to serve
            await asyncio.sleep(FEED_SETTLE_S)  # announcements of the newest marks, on their way
        moved = self.coverage.moved(marks, window_of(since))
        queries = [
            (name, district, max(since, window))
            for (measurement, district), window in sorted(moved.items())
            for name in sorted(self.contract.profiles)
            if self.contract.profiles[name].measurement == measurement
        ]
        merged = None
        if queries and not self.state.loaded and self.settings.api_state_from_rows:
            # At start, after a snapshot or a peer's state: the rows of the profiles whose
            # parts moved, when whole, cost InfluxDB a fraction of those parts' readings (a
            # replay or a drained spool moves every part, announced to nobody: 10.7 s of start
            # at 100,000 devices, nearly a full load). They hold every reading a mark shows.
            merged = await self._load_rows(since, {name for name, _, _ in queries})
        self.caught_up_from = "readings" if merged is None else "latest rows"
        if merged is None:
            merged = await self._load_parts(queries)
            self.parts_queried += len(queries)
        self._loaded_from(began, marks, token)
        self.caught_up += 1
        if save:
            await self.save_snapshot()
        return len(queries), merged

    async def _try_reload(self, *, from_rows: bool = False) -> None:
        try:
            await self.reload(from_rows=from_rows)
        except InfluxError as exc:
            self.load_error = self.scrub(str(exc))
            logger.warning("could not load the latest state from InfluxDB: %s", self.load_error)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.feed = FeedSubscriber(
            self.settings.mqtt,
            self.settings.topic_root,
            loop,
            self._on_feed,
            self._on_status,
            on_crash=functools.partial(self._feed_crashed, loop),
            session=self._session_name(),
            session_expiry=self.settings.api_feed_session_expiry,
            on_session_lost=functools.partial(self.coverage.lost, "the broker kept no session"),
            backlog=self.settings.api_feed_backlog,
        )
        await self._try_replay_alarms()
        await self._start_from_snapshot()
        if not self.state.loaded:
            await self._start_from_peer()
        if not self.state.loaded:
            self._start_feed()  # before the load: readings stored meanwhile are merged, not missed
            await self._subscribed()
            await self._try_reload(from_rows=self.settings.api_state_from_rows)
        self._task = self.supervisor.start(self._run(), "citysense-live")
        self._writer_task = self.supervisor.start(self.writer.run(), "citysense-alarms")

    def _start_feed(self) -> None:
        self._start_subscriber()
        self._start_applying()

    def _start_subscriber(self) -> None:
        """Messages wait (`api_feed_backlog` of them, the broker holds the rest) until
        _start_applying."""
        assert self.feed is not None
        if self._feed_started:
            return
        self._feed_started = time.monotonic()
        self.feed.start()

    def _start_applying(self) -> None:
        if self._feed_task is None:
            self._feed_task = self.supervisor.start(self._apply_feed(), "citysense-feed")

    def _session_name(self) -> str | None:
        """The broker session that keeps the feed while we are away: one per host and data
        folder, the same across restarts (no folder: no snapshot to resume, a clean session)."""
        if self.settings.api_data_dir is None:
            return None
        return self._replica_name("citysense-api")

    def _replica_name(self, prefix: str) -> str:
        """A name of this replica, the same across its restarts: its host and data folder."""
        folder = self.settings.api_data_dir
        place = "" if folder is None else str(folder.resolve())
        where = f"{socket.gethostname()}\0{place}\0{self.settings.topic_root}"
        return f"{prefix}-{hashlib.sha256(where.encode()).hexdigest()[:16]}"

    async def stop(self) -> None:
        # The feed first, and what it handed over applied: with a kept session, the broker
        # holds every later message for the next start, and the snapshot holds every earlier.
        if self.feed is not None:
            stopping = self.feed.stop()
            await asyncio.to_thread(stopping.join, 3.0)
            await asyncio.sleep(0)  # the hand-overs paho's thread queued on the loop
            self._feed.put_nowait(None)  # after them: the feed's task applies them, then ends
            if self._feed_task is not None:
                await asyncio.wait([self._feed_task], timeout=FEED_DRAIN_MAX_S)
        running = (
            self._task,
            self._writer_task,
            self._feed_task,
            self._rows_task,
            self._judge_task,
        )
        tasks = [t for t in running if t is not None]
        for task in tasks:
            task.cancel()
        # A task that died already was reported by the supervisor; stopping goes on regardless,
        # so the alarm events still waiting are flushed and the subscriber closed.
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.writer.aclose()
        await self.save_snapshot()  # what the feed brought since the last reconcile, too

    def _feed_crashed(self, loop: asyncio.AbstractEventLoop, exc: BaseException) -> None:
        loop.call_soon_threadsafe(self.supervisor.fail, "mqtt-feed", exc)

    def _on_feed(self, message: statefeed.Message) -> None:
        self._feed.put_nowait(message)  # the subscriber waits while `api_feed_backlog` wait here

    async def _apply_feed(self) -> None:
        while True:
            message = await self._feed.get()
            if message is None:
                return
            self._applying = True
            readings = message.readings
            for start in range(0, len(readings), FEED_SLICE):
                self.state.apply_feed(readings[start : start + FEED_SLICE], now_ns())
                await asyncio.sleep(0)  # SSE clients drain between slices
            self._taken(message)
            self._applying = False

    def _taken(self, message: statefeed.Message) -> None:
        self.coverage.take(message)  # only once applied: a catch-up may ask it meanwhile
        assert self.feed is not None
        self.feed.applied()
        for listener in self.listeners:
            listener(message.readings)

    def _on_status(self, profile: str, device_id: str, online: bool) -> None:
        self.state.set_connected(profile, device_id, online, now_ns())

    async def _run(self) -> None:
        interval = self.settings.api_state_reconcile_interval
        next_reconcile = time.monotonic() + interval
        next_full = time.monotonic() + self.settings.api_state_full_reload_interval
        next_rows = 0.0
        compact_after = self.settings.api_rows_compact_after
        next_compact = time.monotonic() + compact_after if compact_after else float("inf")
        losses = self.coverage.losses
        while True:
            await asyncio.sleep(
                self.settings.api_status_check_interval if self.state.loaded else RETRY_LOAD_S
            )
            # InfluxDB's failures are expected and handled in _try_reload; anything else is a
            # bug, which ends the task for the supervisor (api.core.supervise) to report.
            if not self.alarms.replayed:
                await self._try_replay_alarms()
            if not self.state.loaded:
                await self._try_reload(from_rows=self.settings.api_state_from_rows)
                continue
            self._emit_due()
            if self._feed_started and self.feed is not None and not self.feed.running():
                # As ingest looks at its own (ingest.worker.check): serving on, the state
                # would follow only the catch-ups, and live events would stop, with /health 200.
                raise RuntimeError("the state feed's MQTT network thread died")
            if (
                self._rows_due is not None
                and time.monotonic() >= next_rows
                and self._rows_task is None
            ):
                # A task of its own: 100,000 rows take seconds to send, and the reporting
                # status is judged meanwhile.
                next_rows = time.monotonic() + interval
                self._rows_task = self.supervisor.start(
                    self._try_write_rows(self._rows_due), "citysense-latest-rows"
                )
            elif time.monotonic() >= next_compact and self._rows_task is None:
                next_compact = time.monotonic() + self.settings.api_state_full_reload_interval
                self._rows_task = self.supervisor.start(
                    self._try_compact_rows(), "citysense-latest-rows"
                )
            if time.monotonic() >= next_full:
                next_full = time.monotonic() + self.settings.api_state_full_reload_interval
                next_reconcile = time.monotonic() + self.settings.api_state_reconcile_interval
                await self._try_reload()
            elif time.monotonic() >= next_reconcile or (
                # A feed message lost (a reconnection, a gap): caught up at once, not minutes
                # later; at most every LOST_CATCH_UP_S while losses go on.
                self.coverage.losses != losses
                and time.monotonic() >= next_reconcile - interval + LOST_CATCH_UP_S
            ):
                losses = self.coverage.losses
                next_reconcile = time.monotonic() + interval
                await self._try_catch_up()

    async def _try_catch_up(self) -> None:
        try:
            await self.catch_up()
        except InfluxError as exc:
            # The state stays as it is, still served: the next round tries again.
            logger.warning("could not catch up with InfluxDB: %s", self.scrub(str(exc)))


async def _all(jobs: Sequence[Coroutine[object, object, _T]]) -> list[_T]:
    """Run `jobs` together, their results in order; when one fails, the others are cancelled
    (their answers are of no use) and its error raised."""
    tasks = [asyncio.create_task(job) for job in jobs]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _identities(series: Series) -> Iterator[tuple[int, int]]:
    """(window, its mark's identity: the stamp, and the quiet stamp if any; wire.changes) of a
    series of q.all_changes. A column InfluxDB leaves out (no quiet mark yet) is none."""
    columns = series.columns
    at_stamp = columns.index("stamp")
    at_quiet = columns.index(changes_layout.QUIET) if changes_layout.QUIET in columns else None
    for row in series.values:
        if row[at_stamp] is None:
            continue
        quiet = None if at_quiet is None or row[at_quiet] is None else int(row[at_quiet])
        yield int(row[0]), changes_layout.identity(int(row[at_stamp]), quiet)
