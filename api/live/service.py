"""The live side of the API process: the state cache, the MQTT subscriber feeding it, the hub
pushing its changes, and the background task that judges reporting status and reconciles with
InfluxDB. `Live.start()` / `Live.stop()` run in the app's lifespan."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence

import httpx

from api.core import query as q
from api.core.contract import Contract
from api.core.readings import readings_by_device
from api.core.settings import ApiSettings
from api.core.supervise import Supervisor
from api.core.times import NS_PER_S, now_ns
from api.live import snapshot
from api.live.alarms import AlarmBook, Outbox, Writer, load_events
from api.live.broker import BrokerProbe
from api.live.feed import FeedSubscriber
from api.live.hub import Hub
from api.live.state import LiveState
from common.errors import InfluxError, InfluxUnavailable
from common.influx import AsyncInfluxClient
from wire import statefeed
from wire.changes import window_of

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
    ) -> None:
        self.supervisor = supervisor or Supervisor()
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
        )
        self.writer = Writer(settings.influx, self.alarms, scrub, transport)
        self.load_error: str | None = "not loaded yet"
        self.feed: FeedSubscriber | None = None
        self._task: asyncio.Task[None] | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._feed_task: asyncio.Task[None] | None = None
        self._feed: asyncio.Queue[list[statefeed.Announced]] = asyncio.Queue(
            settings.api_feed_backlog
        )
        self.feed_dropped = 0
        self._gate = asyncio.Semaphore(settings.api_query_concurrency)
        # What the state is complete for (api.live.snapshot): the start of the last complete
        # load, and the change marks read just before it (None: snapshots are off).
        self._as_of = 0
        self._marks: snapshot.Marks | None = None
        self._fingerprinted: str | None = None
        # Called with every feed message once its readings are applied (the SensorThings MQTT
        # publisher); one that raises ends the feed's task, which the supervisor reports.
        self.listeners: list[Callable[[list[statefeed.Announced]], None]] = []

    def require_loaded(self) -> None:
        """Serving an empty cache as "no device ever reported" would be a lie: 503 instead."""
        if not self.state.loaded:
            raise InfluxUnavailable(f"latest state not loaded from InfluxDB yet: {self.load_error}")

    async def reload(self) -> None:
        """Latest reading of every device from InfluxDB, merged into the cache (newest wins),
        then, when a data folder is set, a snapshot of the state written (api.live.snapshot).

        One query per profile and stored district, a few at a time: at 100,000 devices one
        query per profile kept a single InfluxDB core busy for seconds while the other idled.
        Each answer is streamed (InfluxDB's chunked answer, LOAD_SLICE devices a chunk), each
        chunk parsed and merged as it arrives, with a yield to the event loop between chunks:
        parsed whole, the answers held hundreds of MB of transient objects at 100,000 devices
        and blocked requests and live events for seconds."""
        began, clock = now_ns(), time.perf_counter()
        since = began - int(self.settings.api_latest_lookback * NS_PER_S)
        # Read before the readings: a write stored after them changed a mark (snapshot's doc).
        marks = await self._read_marks(since) if self.settings.api_data_dir else None

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
        merged = await self._load_parts(queries)
        first = not self.state.loaded
        self._loaded_from(began, marks)
        if first:
            logger.info(
                "latest state loaded for %d devices from InfluxDB in full (%d queries, %d "
                "readings) in %.1f s%s",
                len(self.state.devices),
                len(queries),
                merged,
                time.perf_counter() - clock,
                "" if self.settings.api_data_dir else " (no data folder: no snapshot)",
            )
        await self.save_snapshot()

    async def _load_parts(self, queries: Sequence[tuple[str, str | None, int]]) -> int:
        """Latest readings of each (profile, district or all, since), merged; how many."""
        merged = 0

        async def latest(name: str, district: str | None, since: int) -> None:
            nonlocal merged
            profile = self.contract.profiles[name]
            query = q.latest_readings(profile, since, district=district)
            async with self._gate:
                chunks = q.fetch_chunks(
                    self.influx, query, LOAD_SLICE, self.settings.api_load_timeout
                )
                async for series in chunks:
                    found = readings_by_device(profile, series)
                    self.state.load(name, found.items(), now_ns())
                    merged += len(found)
                    await asyncio.sleep(0)

        tasks = [asyncio.create_task(latest(*query)) for query in queries]
        try:
            await asyncio.gather(*tasks)
        finally:  # one failed: the others' answers are of no use
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return merged

    def _loaded_from(self, as_of_ns: int, marks: snapshot.Marks | None) -> None:
        """The state now holds every reading stored before `as_of_ns` and, when `marks` are
        given, every write whose mark was among them."""
        self._as_of, self._marks = as_of_ns, marks
        if not self.state.loaded:
            now = now_ns()
            self.state.baseline(now)
            self.alarms.silent_at_start(self.state.silent(), now)
        self.load_error = None

    async def _read_marks(self, since: int) -> snapshot.Marks:
        """The change marks of every window holding a time at or after `since` (a window's mark
        is stamped at its start, up to 15 minutes before the readings it announces)."""
        marks: snapshot.Marks = {}
        query = q.all_changes(window_of(since))
        async with self._gate:
            chunks = q.fetch_chunks(self.influx, query, LOAD_SLICE, self.settings.api_load_timeout)
            async for found in chunks:
                for series in found:
                    key = (series.tags.get("profile", ""), series.tags.get("district", ""))
                    windows = marks.setdefault(key, {})
                    windows.update((int(t), int(s)) for t, s in series.values if s is not None)
        return marks

    async def save_snapshot(self) -> None:
        """The state and the marks it is complete for, to the data folder (if any)."""
        folder = self.settings.api_data_dir
        if folder is None or self._marks is None or not self.state.loaded:
            return
        clock = time.perf_counter()
        data = snapshot.encode(self.state, self._fingerprint(), self._as_of, self._marks, now_ns())
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
            logger.log(level, "state snapshot in %s not used (%s): loading in full", folder, exc)
            return
        read_s = time.perf_counter() - clock
        assert self.feed is not None
        # Readings stored before the subscription took effect, and announced before it, reach
        # us only through the marks read below: they must be read after it.
        try:
            await asyncio.wait_for(self.feed.subscribed.wait(), SUBSCRIBE_WAIT_S)
        except TimeoutError:
            logger.warning(
                "state feed not subscribed within %.0f s; catching up without it (the "
                "reconcile covers what the feed misses)",
                SUBSCRIBE_WAIT_S,
            )
        began = now_ns()
        since = began - int(self.settings.api_latest_lookback * NS_PER_S)
        try:
            marks = await self._read_marks(since)
            moved = snapshot.changed(restored.marks, marks)
            queries = [
                (name, district, max(since, window))
                for (measurement, district), window in sorted(moved.items())
                for name in sorted(self.contract.profiles)
                if self.contract.profiles[name].measurement == measurement
            ]
            merged = await self._load_parts(queries)
        except InfluxError as exc:
            self.load_error = self.scrub(str(exc))
            logger.warning("could not catch up after the snapshot: %s", self.load_error)
            return  # the state stays not loaded; the full load is retried
        self._loaded_from(began, marks)
        logger.info(
            "latest state of %d devices from the snapshot in %s (%d bytes, as of %.0f s ago, "
            "read in %.2f s) and InfluxDB (%d changed profile and district parts, %d readings) "
            "in %.2f s",
            len(self.state.devices),
            folder,
            restored.size,
            (began - restored.as_of_ns) / NS_PER_S,
            read_s,
            len(queries),
            merged,
            time.perf_counter() - clock,
        )

    async def _try_reload(self) -> None:
        try:
            await self.reload()
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
        )
        try:
            since = now_ns() - int(self.settings.api_alarm_lookback * NS_PER_S)
            self.alarms.replay(await load_events(self.influx, since))
        except InfluxError as exc:
            logger.warning("could not replay alarm events: %s", self.scrub(str(exc)))
        self.feed.start()  # first: readings stored while we load are merged, not missed
        await self._start_from_snapshot()
        if not self.state.loaded:
            await self._try_reload()
        self._task = self.supervisor.start(self._run(), "citysense-live")
        self._writer_task = self.supervisor.start(self.writer.run(), "citysense-alarms")
        self._feed_task = self.supervisor.start(self._apply_feed(), "citysense-feed")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, self._writer_task, self._feed_task) if t is not None]
        for task in tasks:
            task.cancel()
        # A task that died already was reported by the supervisor; stopping goes on regardless,
        # so the alarm events still waiting are flushed and the subscriber closed.
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.writer.aclose()
        await self.save_snapshot()  # what the feed brought since the last reconcile, too
        if self.feed is not None:
            self.feed.stop()

    def _feed_crashed(self, loop: asyncio.AbstractEventLoop, exc: BaseException) -> None:
        loop.call_soon_threadsafe(self.supervisor.fail, "mqtt-feed", exc)

    def _on_feed(self, readings: list[statefeed.Announced]) -> None:
        try:
            self._feed.put_nowait(readings)
        except asyncio.QueueFull:
            # Far behind: this message's readings come back with the next reconcile.
            if not self.feed_dropped:
                logger.warning("state feed backlog full: dropping messages until it drains")
            self.feed_dropped += 1

    async def _apply_feed(self) -> None:
        while True:
            readings = await self._feed.get()
            for start in range(0, len(readings), FEED_SLICE):
                self.state.apply_feed(readings[start : start + FEED_SLICE], now_ns())
                await asyncio.sleep(0)  # SSE clients drain between slices
            for listener in self.listeners:
                listener(readings)

    def _on_status(self, profile: str, device_id: str, online: bool) -> None:
        self.state.set_connected(profile, device_id, online, now_ns())

    async def _run(self) -> None:
        next_reconcile = time.monotonic() + self.settings.api_state_reconcile_interval
        while True:
            await asyncio.sleep(
                self.settings.api_status_check_interval if self.state.loaded else RETRY_LOAD_S
            )
            # InfluxDB's failures are expected and handled in _try_reload; anything else is a
            # bug, which ends the task for the supervisor (api.core.supervise) to report.
            if not self.state.loaded:
                await self._try_reload()
                continue
            self.state.tick(now_ns())
            if time.monotonic() >= next_reconcile:
                next_reconcile = time.monotonic() + self.settings.api_state_reconcile_interval
                await self._try_reload()
