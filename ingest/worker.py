"""The ingest worker: consumer → pipeline → batcher → writer, acknowledging after store.

Threads: paho's network thread runs the pure pipeline for each message and queues its lines with
the message's ticket (ingest.acks); the writer thread takes batches, writes them (retrying while
InfluxDB is away, spooling to disk once the outage is known), stores dead letters for whatever
InfluxDB refused, and only then settles the batch's tickets, which acknowledges its messages. The
bytes held are bounded (ingest.budget) as well as the messages (Receive Maximum).

Every long-lived thread is supervised: an unexpected exception is logged with its traceback,
counted, makes /ready false and ends the process non-zero (`crashed`), so that its supervisor
(`--workers`, compose, systemd) restarts it; nothing it held was acknowledged, so the broker
delivers it again.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx

from common.errors import InfluxError
from common.influx import InfluxClient
from common.schema import ensure_schema
from device_profiles import Device, Profile, Registry, Variant
from ingest.acks import Acks
from ingest.announce import Announcer
from ingest.batch import Batch, Batcher
from ingest.budget import Budget, weight_of
from ingest.changes import change_lines, changes_of, is_change
from ingest.consume import Consumer
from ingest.deadletter import DeadLetterEncoder
from ingest.dedupe import Seen
from ingest.encode import reading_of
from ingest.latest import LatestRows, Pending
from ingest.observe import ObserveServer
from ingest.pipeline import Pipeline
from ingest.registry_watch import RegistryWatch
from ingest.settings import IngestSettings
from ingest.spool import CorruptSegment, Spool
from ingest.stages import Received, Rejected
from ingest.stats import Stats, thread_cpu_seconds
from ingest.write import BadLine, GaveUp, Stopped, Writer
from wire.deadletters import MEASUREMENT as DEAD_LETTERS
from wire.latest import is_row
from wire.lineproto import parse_line
from wire.reasons import Reason
from wire.topics import TopicLayout

log = logging.getLogger(__name__)


class Worker:
    def __init__(
        self,
        settings: IngestSettings,
        profiles: Mapping[str, Profile],
        registry: Registry,
        *,
        variants: Mapping[tuple[str, str], Variant] | None = None,
        influx_transport: httpx.BaseTransport | None = None,
        retire: bool = False,
    ) -> None:
        self.settings = settings
        self.retiring = retire
        # Read once: the pipeline and the registry watch both need them.
        if variants is None:
            variants = settings.load_variants(dict(profiles))
        self._measurements = tuple(profiles)  # a profile's readings are stored under its name
        self.stats = Stats()
        self.batcher = Batcher(settings.batch_size, settings.flush_interval)
        self.acks = Acks()
        self.budget = Budget(settings.max_held_bytes)
        self.seen = Seen(settings.dedupe_window)
        self._thread_ids: dict[str, int] = {}  # supervised threads' Linux ids, for their CPU
        # Set when a long-lived thread died of an unexpected exception (see the module's doc).
        self.crashed = threading.Event()
        # Set once a write gave up: batches go straight to the spool until InfluxDB is back.
        self._outage = threading.Event()
        # Dead letters of lines InfluxDB refused (the pipeline's own are in its outcomes).
        # Tagged with this worker's client id: a dead letter's point is its tags and time, so
        # two workers' letters of one reason and profile in one nanosecond would be one point,
        # one of them lost (each encoder makes its own times unique, not another's).
        self._refusals = DeadLetterEncoder(settings.dead_letter_max_payload, settings.client_id)
        self.pipeline = Pipeline(
            profiles,
            registry,
            settings.topics,
            self.stats,
            limits=settings.limits,
            dead_letters=DeadLetterEncoder(settings.dead_letter_max_payload, settings.client_id),
            variants=variants,
            accept_unknown_devices=settings.unknown_devices == "accept",
            seen=self.seen,
        )
        self.influx = InfluxClient(settings.influx, transport=influx_transport)
        # Every InfluxDB client of the worker goes through the same transport (tests put a
        # fault-injecting one there; it is the network everywhere else).
        self._transport = influx_transport
        # Set when the drain deadline passes: the writer stops retrying and acks nothing more.
        self._abort = threading.Event()
        self._intake = threading.Event()
        self._intake.set()
        self._writing_since = 0.0
        self._draining = threading.Event()
        self.writer = Writer(
            self.influx,
            self.stats,
            self._abort,
            settings.retry,
            settings.max_request_bytes,
            set_up=self._set_up(self.influx),
        )
        self.consumer = Consumer(
            settings.mqtt,
            client_id=settings.client_id,
            subscription=settings.subscription,
            receive_maximum=settings.receive_maximum,
            session_expiry=settings.session_expiry,
            keepalive=settings.mqtt_keepalive,
            on_received=self._on_received,
            on_session=self._on_session,
            on_lost=self.acks.connection_lost,
            clock=time.time_ns,
            retire=retire,
        )
        self.announcer = Announcer(
            self.consumer.publish,
            TopicLayout(settings.topic_root).state_feed(settings.client_id),
            settings.client_id,
        )
        self.consumer.will(*self.announcer.farewell(), settings.state_feed_will_delay)
        # Each device's newest reading as a row (wire.latest), one keeper per writing thread.
        self.latest = LatestRows(settings.client_id, profiles, self._registered)
        self.latest_unspooled = LatestRows(
            f"{settings.client_id}/spool", profiles, self._registered
        )
        self._writer_thread = self._supervised(self._write_loop, "citysense-writer")
        self._stopping = threading.Event()
        self.spool: Spool | None = None
        if settings.spool_dir is not None:
            self.spool = Spool(settings.spool_dir / settings.client_id, settings.spool_max_bytes)
            self.stats.gauges["spool_bytes"] = lambda: float(
                self.spool.bytes_used if self.spool else 0
            )
        self._unspool_thread = self._supervised(self._unspool_loop, "citysense-unspool")
        self.registry_watch = RegistryWatch(
            settings.registry,
            profiles,
            variants,
            self.pipeline.use_registry,
        )
        self._registry_thread = self._supervised(
            lambda: self.registry_watch.run(self._stopping, settings.registry_check),
            "citysense-registry",
        )
        self._observe: ObserveServer | None = None
        # Wall time a batch was last stored in InfluxDB (0: none yet): an alert on its age says
        # ingest stopped storing; bench.throughput takes its end from it. Writer and unspooler
        # threads set it, a float assignment.
        self._last_stored = 0.0
        self.stats.gauges.update(
            buffered_lines=self.batcher.buffered_lines,
            unacked_messages=lambda: float(len(self.acks)),
            acks_awaiting_redelivery=lambda: float(self.acks.stored_unconfirmed),
            acks_voided=lambda: float(self.acks.voided),
            held_bytes=lambda: float(self.budget.held),
            held_bytes_limit=lambda: float(self.budget.max_bytes),
            budget_waits=lambda: float(self.budget.waits),
            oldest_unacked_seconds=self._oldest_unacked,
            latest_rows=lambda: float(len(self.latest)),
            last_stored_timestamp_seconds=lambda: self._last_stored,
            clock_offset_seconds=lambda: (
                math.nan if self.influx.clock_offset is None else self.influx.clock_offset
            ),
            ready=lambda: float(not self.crashed.is_set()),
            # A broker that refuses the CONNECT or the SUBSCRIBE (an ACL, a bad password) leaves
            # the worker running and taking nothing: no thread dies, nothing reconnects.
            subscribed=lambda: float(self.retiring or self.consumer.subscribed.is_set()),
            registry_broken=lambda: float(self.registry_watch.broken),
            # Where the CPU goes, per thread (bench.throughput reports it per reading).
            cpu_seconds_mqtt_thread=lambda: thread_cpu_seconds(self.consumer.thread_id),
            cpu_seconds_writer_thread=lambda: thread_cpu_seconds(
                self._thread_ids.get("citysense-writer")
            ),
        )
        if self.spool is not None:
            spool = self.spool
            self.stats.gauges.update(
                spool_corrupt_segments=lambda: float(spool.corrupt),
                spool_refused_appends=lambda: float(spool.refused),
                spool_bytes_limit=lambda: float(spool.max_bytes),
            )

    def _supervised(self, target: Callable[[], None], name: str) -> threading.Thread:
        def run() -> None:
            self._thread_ids[name] = threading.get_native_id()
            try:
                target()
            except Exception:
                log.exception(
                    "thread %s died; the worker is not ready any more and exits for its "
                    "supervisor to restart it (what it held was not acknowledged)",
                    name,
                )
                self.stats.add(thread_crashes=1)
                self.crashed.set()

        return threading.Thread(target=run, name=name, daemon=True)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        # InfluxDB away at start: the set-up runs again when a write finds the database or a
        # policy missing (Writer's set_up).
        if self.settings.create_database:
            self._create_database(self.influx)
        if self.settings.http_port:
            self._observe = ObserveServer(
                self.settings.http_host,
                self.settings.http_port,
                metrics=lambda: self.stats.prometheus() + self.pipeline.unknown.prometheus(),
                ready=self.ready,
                unknown_fields=self.pipeline.unknown.sightings,
            )
            self._observe.start()
        self._writer_thread.start()
        if self.spool is not None:
            self._unspool_thread.start()
        if self.settings.registry_check > 0:
            self._registry_thread.start()
        self.consumer.start()

    def check(self) -> bool:
        """Whether every thread of the worker runs (the main loop asks every half second). Our
        threads say so themselves (`crashed`); paho's network thread is paho's, and ends
        silently on an exception it does not expect (a race of its own queue of packets with
        its reconnection, for one), so it is looked at here."""
        if not self.crashed.is_set() and not self.consumer.running():
            log.error(
                "the MQTT network thread died; the worker is not ready any more and exits for "
                "its supervisor to restart it (what it held was not acknowledged)"
            )
            self.stats.add(thread_crashes=1)
            self.crashed.set()
        return not self.crashed.is_set()

    def ready(self) -> bool:
        if self.crashed.is_set():
            return False
        taking = self.consumer.unsubscribed if self.retiring else self.consumer.subscribed
        return taking.is_set() and self.influx_reachable()

    def drained(self, idle: float) -> bool:
        """Retiring: the session's queue delivered (nothing for `idle` seconds), and everything
        taken stored and acknowledged — the spool included, which belongs to this client id."""
        return (
            self.consumer.unsubscribed.is_set()
            and time.monotonic() - self.consumer.last_message >= idle
            and not self.batcher.buffered_lines()
            and not len(self.acks)
            and not self._writing_since
            and (self.spool is None or not self.spool.segments())
        )

    def influx_reachable(self) -> bool:
        with InfluxClient(self.settings.influx, transport=self._transport) as probe:
            return probe.ping()

    def stop(self, *, end_session: bool = False) -> bool:
        """Drain: stop taking messages, write and ack what is held, disconnect. True if clean.
        `end_session` (retiring) has the broker discard the session, only if the drain was."""
        self._intake.clear()
        self._draining.set()
        self.batcher.close()
        self._writer_thread.join(self.settings.drain_timeout)
        clean = not self._writer_thread.is_alive()
        if not clean:
            log.warning(
                "drain did not finish in %.1fs; unacknowledged messages stay with the "
                "broker and will be redelivered",
                self.settings.drain_timeout,
            )
            self._abort.set()
            self._writer_thread.join(5.0)
        self._stopping.set()  # the unspooler leaves what it has not written for next time
        if self._unspool_thread.is_alive():
            self._unspool_thread.join(5.0)
        # Nothing more is announced: the run's final number, so that a reader sees a message
        # lost just before it (a run that ends without it leaves its will instead).
        self.announcer.close()
        self.consumer.stop(end_session=end_session and clean)
        if self._observe is not None:
            self._observe.stop()
        self.influx.close()
        if self.spool is not None and not (
            self._writer_thread.is_alive() or self._unspool_thread.is_alive()
        ):
            # Let go only once nothing of ours uses it: a thread still at work holds it (till
            # the process ends) rather than share it with a next spool of this process.
            self.spool.close()
        return clean

    def _create_database(self, client: InfluxClient) -> None:
        """InfluxDB 1.x: database, retention policies and roll-ups, idempotently. On 2.x/3.x, or
        where ingest's account is not InfluxDB's admin (the compose stack: `citysense schema`
        did it first), these statements are refused, which is fine. Run at start, and again
        by a writer whose write found the database or a policy missing: InfluxDB away at
        start, or a policy dropped since (before, every such write was refused for good)."""
        try:
            report = ensure_schema(client, self.settings.retention, self._measurements)
        except InfluxError as exc:
            log.warning(
                "could not set up database %r (%s); assuming it exists",
                self.settings.influx_db,
                exc,
            )
            return
        if report.created or report.altered:
            log.info("database set up: created %s, altered %s", report.created, report.altered)

    def _set_up(self, client: InfluxClient) -> Callable[[], None] | None:
        """What a writer through `client` runs when InfluxDB says the database or a policy
        is missing (Writer's set_up); None if this worker sets nothing up."""
        if not self.settings.create_database:
            return None
        return lambda: self._create_database(client)

    # --- MQTT thread -------------------------------------------------------------------------

    def _on_session(self, present: bool) -> None:
        self.stats.add(connections=1)
        # The socket's close counted the connection before this one already (on_lost); counted
        # again here only so that a close paho might make without `_sock_close` (none known)
        # still counts.
        self.acks.connection_lost()
        if not present:
            self.acks.new_session()

    def _on_received(self, msg: Received) -> None:
        # In paho's network thread: an exception escaping here would end that thread silently.
        try:
            self._take(msg)
        except Exception:
            log.exception("the MQTT thread failed on a message from %s; exiting", msg.topic)
            self.stats.add(thread_crashes=1)
            self.crashed.set()
            self._intake.clear()

    def _take(self, msg: Received) -> None:
        if not self._intake.is_set():
            # Draining: nothing new is taken (not acknowledged, the broker redelivers it next
            # time); a delivery again of one held and stored is acknowledged now.
            if msg.qos:
                ack = self.consumer.ack
                self.acks.again(msg.mid, msg.topic, msg.payload, msg.dup, qos=msg.qos, ack=ack)
            return
        ticket = None
        if msg.qos:
            ticket = self.acks.take(
                msg.mid, msg.qos, msg.topic, msg.payload, msg.dup, ack=self.consumer.ack
            )
            if ticket is None:  # the broker delivered again what we hold: acked once stored
                self.stats.add(redelivered_skipped=1)
                return
        outcome = self.pipeline.process(msg)
        weight = weight_of(len(msg.payload), outcome.lines, len(outcome.accepted))
        if not self.budget.acquire(weight, self._draining, self.consumer.keep_alive):
            return  # draining while waiting for room: the broker redelivers it next time
        self.batcher.add(
            outcome.lines,
            ticket,
            outcome.readings,
            len(outcome.rejected),
            feed=outcome.accepted,
            weight=weight,
        )
        self.stats.message_taken(outcome.readings)

    # --- writer thread -----------------------------------------------------------------------

    def _registered(self) -> Mapping[str, Device]:
        return self.pipeline.registry.devices

    def _write_loop(self) -> None:
        self.latest.resume(self.influx)
        while True:
            batch = self.batcher.take(timeout=1.0)
            if batch is None:
                if not self._intake.is_set():
                    return  # closed and drained
                continue
            try:
                self._store(batch)
            except Stopped:
                log.warning(
                    "stopped with %d messages unstored; the broker keeps them", len(batch.tickets)
                )
                return

    def _store(self, batch: Batch) -> None:
        self._writing_since = batch.oldest
        # The change marks travel with the readings (the writer sends them right after the
        # readings are stored, and they go into the spool together): no batch is acknowledged
        # before the marks of its windows have moved.
        # The windows are found here, once a batch, not for every message on the MQTT thread
        # (a set and a call a message there, ~0.8 µs).
        spilled = batch.lines + change_lines(changes_of(batch.feed))
        if self._outage.is_set() and self._spill(spilled):
            self._settle(batch, spooled=True)
            return
        # The latest rows go between the readings and their marks (LatestRows.write: the
        # owed mark with them, before the marks, so an API that read a mark finds it too), never
        # into the spool: the unspooler keeps rows of its own.
        self.latest.recheck(self.influx)
        tail = spilled[len(batch.lines) :]
        marks: list[str] = []
        try:
            deadline = self._spill_deadline()
            done = self.latest.write(
                self.writer, batch.lines, batch.feed, tail, deadline=deadline, stored=marks
            )
        except GaveUp:
            self._outage.set()
            if self._spill(spilled):
                self._settle(batch, spooled=True)
                return
            # The spool is full or the disk refuses: keep the batch and keep trying; no acks
            # means the broker stops sending at Receive Maximum (back-pressure, not loss).
            log.warning("spool refused the batch; holding it until InfluxDB is back")
            marks.clear()
            done = self.latest.write(self.writer, batch.lines, batch.feed, tail, stored=marks)
        self._outage.clear()
        self._last_stored = time.time()  # before the readings are counted as stored
        bad = done.bad + self._rows_stored(self.latest, done.rows, done.rest, self.writer)
        self._store_refused(bad, self.writer)  # before the acks: a dead letter is data too
        self._count_stored(spilled, bad)
        # Announced before the acks, which paho sends after it on the same connection: a crash
        # in between redelivers the batch, which is stored and announced again. Announced after
        # them, a crash would leave stored readings the API is never told of, and the feed's
        # marks (wire.statefeed) could vouch for a window that holds them.
        if done.kept and self.settings.state_feed:
            self.announcer.announce(done.kept, marks)  # not a refused reading: never stored
        self._settle(batch, spooled=False)

    def _rows_stored(
        self, keeper: LatestRows, rows: Pending, bad: list[BadLine], writer: Writer
    ) -> list[BadLine]:
        """LatestRows.settle, its refusals counted; if rows were refused, the owed mark stored
        now (before the batch is acknowledged: a crash redelivers it). An owed mark refused
        (the one the write carried, or this one) is counted lost, never dead-lettered as a
        reading. Raises Stopped."""
        # Refused for a missing `latest` policy: the keeper is off (said once) and every write
        # owes a mark (latest_rows_owed, alert CitySenseLatestRowsOff), not a row gone wrong.
        wrong = sum(1 for item in bad if is_row(item.line) and not item.missing)
        bad, refused = keeper.settle(rows, bad)
        if wrong:
            self.stats.add(latest_rows_refused=wrong)
        # Rows refused are known only now, after the batch's change marks: a reader between the
        # two may take the rows for whole without this reading until the next full reload (a
        # row's layout is typed, so only a missing policy refuses one, and then no point says
        # whole). InfluxDB answered just now: retried without a deadline.
        bad, lost = keeper.owe(bad, refused, writer)
        if lost:
            self.stats.add(latest_owed_lost=lost)
        if rows.owed or refused:
            self.stats.add(latest_rows_owed=1)
        return bad

    def _spill(self, lines: list[str]) -> bool:
        return self.spool is not None and self.spool.append(lines)

    def _settle(self, batch: Batch, *, spooled: bool) -> None:
        acked = self.acks.settle(batch.tickets, self.consumer.queue_ack, self.consumer.send_acks)
        self.budget.release(batch.weight)
        self._writing_since = 0.0
        if spooled:
            self.stats.add(spilled_batches=1, messages_acked=acked)
        else:
            self.stats.add(messages_acked=acked, batches_written=1)

    def _spill_deadline(self) -> float | None:
        if self.spool is None:
            return None
        return time.monotonic() + self.settings.spill_after

    def _count_stored(self, lines: list[str], bad: list[BadLine]) -> None:
        dead = sum(1 for line in lines if line.startswith(DEAD_LETTERS + ","))
        marks = sum(1 for line in lines if is_change(line))
        bad_readings = sum(
            1 for b in bad if not b.line.startswith(DEAD_LETTERS + ",") and not is_change(b.line)
        )
        self.stats.add(
            readings_stored=len(lines) - dead - marks - bad_readings,
            dead_letters_stored=dead + bad_readings,
        )

    # --- unspool thread ----------------------------------------------------------------------

    def _unspool_loop(self) -> None:
        """Write spooled segments, oldest first, whenever there are any; delete each once stored."""
        assert self.spool is not None
        with InfluxClient(self.settings.influx, transport=self._transport) as client:
            self.latest_unspooled.resume(client)
            writer = Writer(
                client,
                self.stats,
                self._stopping,
                self.settings.retry,
                self.settings.max_request_bytes,
                set_up=self._set_up(client),
            )
            while not self._stopping.wait(0.5):
                segments = self.spool.segments()
                if not segments and self._outage.is_set() and client.ping():
                    self._outage.clear()  # InfluxDB is back and nothing waits on disk
                while segments:
                    self.latest_unspooled.recheck(client)
                    group, segments = self._group(segments)
                    if not self._unspool(group, writer):
                        return  # stopping: what is on disk is written by the next start

    def _group(self, segments: list[Path]) -> tuple[list[tuple[Path, list[str]]], list[Path]]:
        """The oldest segments whose lines fit in one request (at least one), read, and the
        segments left. Several at once: across a network each write costs round trips, and
        one segment per write drained no faster than an outage filled the spool. Damaged
        segments are set aside on the way."""
        assert self.spool is not None
        group: list[tuple[Path, list[str]]] = []
        size = 0
        for n, segment in enumerate(segments):
            try:
                lines = [
                    line
                    for line in self.spool.read(segment)
                    if not is_change(line) and not is_row(line)
                ]
            except CorruptSegment as exc:
                self.spool.quarantine(segment, str(exc))
                continue
            weight = sum(len(line) + 1 for line in lines)
            if group and size + weight > self.settings.max_request_bytes:
                return group, segments[n:]
            group.append((segment, lines))
            size += weight
        return group, []

    def _unspool(self, group: list[tuple[Path, list[str]]], writer: Writer) -> bool:
        """Write a group of segments as one, with change marks derived again from their readings
        (segments written before marks existed have none, and the stamps they hold may be long
        seen); delete each once stored. Rewriting is idempotent, so a crash in between is safe."""
        assert self.spool is not None
        if not group:
            return True
        data = [line for _, lines in group for line in lines]
        measurements = set(self.pipeline.measurements)
        readings = [r for line in data if (r := reading_of(line, measurements)) is not None]
        # Not announced (the API finds them by their marks): quiet marks (wire.changes).
        changes = change_lines(changes_of(readings), quiet=True)
        marks: list[str] = []
        keeper = self.latest_unspooled
        try:
            done = keeper.write(writer, data, readings, changes, stored=marks)
            self._outage.clear()
            self._last_stored = time.time()
            bad = done.bad + self._rows_stored(keeper, done.rows, done.rest, writer)
            # Inside: stopped while the dead letters are retried is a stop, not a crash.
            self._store_refused(bad, writer)
        except Stopped:
            return False  # the segments stay; written again next time (idempotent)
        self._count_stored([*data, *changes], bad)
        if self.settings.state_feed:
            self.announcer.announce(list(done.kept), marks)
        for segment, _ in group:
            self.spool.remove(segment)
        self.stats.add(unspooled_batches=len(group))
        return True

    def _store_refused(self, bad: list[BadLine], writer: Writer) -> None:
        """Dead letters for the lines InfluxDB refused, stored (retrying like any write) before
        the messages that produced them are acknowledged."""
        if not bad:
            return
        lines = []
        for item in bad:
            measurement = item.line.split(",", 1)[0]
            log.error("InfluxDB refused a line of %s: %s", measurement, item.error)
            self._forget(item.line)
            rejected = Rejected(
                Reason.WRITE_REJECTED, item.error[:300], "", measurement, "", item.line.encode()
            )
            self.stats.rejected(measurement, Reason.WRITE_REJECTED)
            lines.append(self._refusals.encode(rejected))
        for still_bad in writer.write(lines):
            # Cannot happen with lines we encode; if it does, it must not pass silently.
            log.critical("could not store a dead letter: %s: %s", still_bad.error, still_bad.line)
            self.stats.add(dead_letters_lost=1)

    def _forget(self, line: str) -> None:
        """A refused reading was not stored: a resend of it must not count as a duplicate."""
        try:
            point = parse_line(line)
        except ValueError:
            return
        device_id = point.tags.get("device_id")
        if device_id is not None:
            self.seen.forget(point.measurement, device_id, point.time_ns)

    def _oldest_unacked(self) -> float:
        if self._writing_since:
            return time.monotonic() - self._writing_since
        return self.batcher.oldest_age()
