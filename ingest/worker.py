"""The ingest worker: consumer → pipeline → batcher → writer, acknowledging after store.

Threads: paho's network thread runs the pure pipeline for each message and queues its lines;
the writer thread takes batches, writes them (retrying while InfluxDB is away) and only then
acknowledges their messages. The broker never sends more than Receive Maximum unacknowledged
messages, so memory is bounded however long InfluxDB is down: the backlog waits at the broker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

import httpx

from common.errors import InfluxError
from common.influx import InfluxClient
from device_profiles import Profile, Registry, Variant
from ingest.batch import Batch, Batcher, Pending
from ingest.changes import change_lines, changes_of, is_change
from ingest.consume import Consumer
from ingest.deadletter import DeadLetterEncoder
from ingest.dedupe import Seen
from ingest.encode import reading_of
from ingest.observe import ObserveServer
from ingest.pipeline import Pipeline
from ingest.settings import IngestSettings
from ingest.spool import Spool
from ingest.stages import Enriched, Received, Rejected
from ingest.stats import Stats
from ingest.write import BadLine, GaveUp, Stopped, Writer
from wire import statefeed
from wire.deadletters import MEASUREMENT as DEAD_LETTERS
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
        self.stats = Stats()
        self.batcher = Batcher(settings.batch_size, settings.flush_interval)
        self.pipeline = Pipeline(
            profiles,
            registry,
            settings.topics,
            self.stats,
            limits=settings.limits,
            dead_letters=DeadLetterEncoder(settings.dead_letter_max_payload),
            variants=variants if variants is not None else settings.load_variants(dict(profiles)),
            accept_unknown_devices=settings.unknown_devices == "accept",
            seen=Seen(settings.dedupe_window),
        )
        self.influx = InfluxClient(settings.influx, transport=influx_transport)
        # Set when the drain deadline passes: the writer stops retrying and acks nothing more.
        self._abort = threading.Event()
        self._intake = threading.Event()
        self._intake.set()
        self._writing_since = 0.0
        self.writer = Writer(self.influx, self.stats, self._abort, settings.retry)
        self.consumer = Consumer(
            settings.mqtt,
            client_id=settings.client_id,
            subscription=settings.subscription,
            receive_maximum=settings.receive_maximum,
            session_expiry=settings.session_expiry,
            on_received=self._on_received,
            on_session=self._on_session,
            clock=time.time_ns,
            retire=retire,
        )
        self._writer_thread = threading.Thread(
            target=self._write_loop, name="citysense-writer", daemon=True
        )
        self._stopping = threading.Event()
        self.spool: Spool | None = None
        if settings.spool_dir is not None:
            self.spool = Spool(settings.spool_dir / settings.client_id, settings.spool_max_bytes)
            self.stats.gauges["spool_bytes"] = lambda: float(
                self.spool.bytes_used if self.spool else 0
            )
        self._unspool_thread = threading.Thread(
            target=self._unspool_loop, name="citysense-unspool", daemon=True
        )
        self._observe: ObserveServer | None = None
        self.stats.gauges.update(
            buffered_lines=self.batcher.buffered_lines,
            unacked_messages=self.batcher.held_messages,
            oldest_unacked_seconds=self._oldest_unacked,
        )

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.settings.create_database:
            self._create_database()
        if self.settings.http_port:
            self._observe = ObserveServer(
                self.settings.http_host,
                self.settings.http_port,
                metrics=self.stats.prometheus,
                ready=self.ready,
            )
            self._observe.start()
        self._writer_thread.start()
        if self.spool is not None:
            self._unspool_thread.start()
        self.consumer.start()

    def ready(self) -> bool:
        taking = self.consumer.unsubscribed if self.retiring else self.consumer.subscribed
        return taking.is_set() and self.influx_reachable()

    def drained(self, idle: float) -> bool:
        """Retiring: the session's queue delivered (nothing for `idle` seconds), and everything
        taken stored and acknowledged — the spool included, which belongs to this client id."""
        return (
            self.consumer.unsubscribed.is_set()
            and time.monotonic() - self.consumer.last_message >= idle
            and not self.batcher.buffered_lines()
            and not self.batcher.held_messages()
            and not self._writing_since
            and (self.spool is None or not self.spool.segments())
        )

    def influx_reachable(self) -> bool:
        with InfluxClient(self.settings.influx) as probe:
            return probe.ping()

    def stop(self, *, end_session: bool = False) -> bool:
        """Drain: stop taking messages, write and ack what is held, disconnect. True if clean.
        `end_session` (retiring) has the broker discard the session, only if the drain was."""
        self._intake.clear()
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
        self.consumer.stop(end_session=end_session and clean)
        if self._observe is not None:
            self._observe.stop()
        self.influx.close()
        return clean

    def _create_database(self) -> None:
        # InfluxDB 1.x creates it idempotently; on 2.x/3.x the operator provides the bucket and
        # this statement is refused, which is fine.
        try:
            self.influx.create_database()
        except InfluxError as exc:
            log.warning(
                "could not create database %r (%s); assuming it exists",
                self.settings.influx_db,
                exc,
            )

    # --- MQTT thread -------------------------------------------------------------------------

    def _on_session(self, present: bool) -> None:
        if not present:
            self.batcher.new_session()

    def _on_received(self, msg: Received) -> None:
        if not self._intake.is_set():
            return  # draining: not acknowledged, so the broker redelivers it next time
        outcome = self.pipeline.process(msg)
        pending = Pending(msg.mid, msg.qos, self.batcher.epoch) if msg.qos else None
        feed = outcome.accepted if self.settings.state_feed else None
        changes = changes_of(outcome.accepted)
        if self.batcher.add(
            outcome.lines,
            pending,
            outcome.readings,
            len(outcome.rejected),
            feed=feed,
            changes=changes,
        ):
            self.stats.message_taken(outcome.readings)
        else:
            self.stats.add(redelivered_skipped=1)

    # --- writer thread -----------------------------------------------------------------------

    def _write_loop(self) -> None:
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
                    "stopped with %d messages unstored; the broker keeps them", len(batch.pending)
                )
                return

    def _store(self, batch: Batch) -> None:
        self._writing_since = batch.oldest
        spooled = False
        # The change marks travel with the readings (the writer sends them right after the
        # readings are stored, and they go into the spool together): no batch is acknowledged
        # before the marks of its windows have moved.
        lines = batch.lines + change_lines(batch.changes)
        try:
            bad = self.writer.write(lines, self._spill_deadline())
        except GaveUp:
            spooled = self.spool is not None and self.spool.append(lines)
            if not spooled:
                # The spool is full: keep the batch and keep trying; no acks means the broker
                # stops sending once Receive Maximum is reached (back-pressure, not loss).
                log.warning("spool full; holding the batch until InfluxDB is back")
            bad = [] if spooled else self.writer.write(lines)
        acked = self.batcher.acknowledge(batch, self.consumer.ack)
        self._writing_since = 0.0
        if spooled:
            self.stats.add(spilled_batches=1, messages_acked=acked)
            return
        self._count_stored(lines, bad, self.writer)
        self.stats.add(messages_acked=acked, batches_written=1)
        if batch.feed:
            self._announce(batch.feed)

    def _spill_deadline(self) -> float | None:
        if self.spool is None:
            return None
        return time.monotonic() + self.settings.spill_after

    def _count_stored(self, lines: list[str], bad: list[BadLine], writer: Writer) -> None:
        dead = sum(1 for line in lines if line.startswith(DEAD_LETTERS + ","))
        marks = sum(1 for line in lines if is_change(line))
        bad_readings = sum(
            1 for b in bad if not b.line.startswith(DEAD_LETTERS + ",") and not is_change(b.line)
        )
        if bad:
            self._dead_letter(bad, writer)
        self.stats.add(
            readings_stored=len(lines) - dead - marks - bad_readings,
            dead_letters_stored=dead + bad_readings,
        )

    # --- unspool thread ----------------------------------------------------------------------

    def _unspool_loop(self) -> None:
        """Write spooled segments, oldest first, whenever there are any; delete each once stored."""
        assert self.spool is not None
        with InfluxClient(self.settings.influx) as client:
            writer = Writer(client, self.stats, self._stopping, self.settings.retry)
            while not self._stopping.wait(0.5):
                for segment in self.spool.segments():
                    lines, readings = self._read_back(self.spool.read(segment))
                    try:
                        bad = writer.write(lines)
                    except Stopped:
                        return  # still on disk: written by the next start
                    self._count_stored(lines, bad, writer)
                    if self.settings.state_feed:
                        refused = {b.line for b in bad}
                        self._announce([r for r, line in readings if line not in refused])
                    self.spool.remove(segment)
                    self.stats.add(unspooled_batches=1)

    def _read_back(self, lines: list[str]) -> tuple[list[str], list[tuple[Enriched, str]]]:
        """A spooled segment's lines, with change marks derived again from its readings
        (segments written before marks existed have none, and the stamps they hold may be long
        seen), and its readings with their lines, for the state feed once they are stored."""
        data = [line for line in lines if not is_change(line)]
        measurements = set(self.pipeline.measurements)
        readings = [(r, line) for line in data if (r := reading_of(line, measurements)) is not None]
        return data + change_lines(changes_of(r for r, _ in readings)), readings

    def _dead_letter(self, bad: list[BadLine], writer: Writer) -> None:
        lines = []
        for item in bad:
            measurement = item.line.split(",", 1)[0]
            log.error("InfluxDB refused a line of %s: %s", measurement, item.error)
            self._forget(item.line)
            rejected = Rejected(
                Reason.WRITE_REJECTED, item.error[:300], "", measurement, "", item.line.encode()
            )
            lines.append(self.pipeline.dead_letter_line(rejected))
        for still_bad in writer.write(lines):
            # Cannot happen with lines we encode; if it does, it must not pass silently.
            log.critical("could not store a dead letter: %s", still_bad.error)

    def _announce(self, readings: list[Enriched]) -> None:
        """Tell the API what was just stored (best effort, QoS 0: it can rebuild from InfluxDB)."""
        topic = TopicLayout(self.settings.topic_root).state_feed(self.settings.client_id)
        for payload in statefeed.encode(readings):
            self.consumer.publish(topic, payload)

    def _forget(self, line: str) -> None:
        """A refused reading was not stored: a resend of it must not count as a duplicate."""
        series, _fields, time_ns = line.rsplit(" ", 2)
        tags = dict(part.split("=", 1) for part in series.split(",")[1:] if "=" in part)
        if "device_id" in tags and time_ns.isdigit():
            self.pipeline.seen.forget(series.split(",", 1)[0], tags["device_id"], int(time_ns))

    def _oldest_unacked(self) -> float:
        if self._writing_since:
            return time.monotonic() - self._writing_since
        return self.batcher.oldest_age()
