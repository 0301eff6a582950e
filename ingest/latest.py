"""Latest rows: the newest reading of each device a batch stored, as rows (wire.latest) that go
with the batch, after its readings and before its change marks.

One keeper per thread that writes (the writer, the unspooler; replay), each under a writer tag
of its own: a row only ever moves forward because only its own thread writes it, and only with a
reading newer than the one it last stored there. The newest time stored per device is
remembered from the moment a write succeeds (a batch spooled instead wrote no rows; the
unspooler writes them later, under its tag), and read back from InfluxDB when the thread starts,
so that a late reading after a restart cannot overwrite a newer row either. If that read fails,
the keeper keeps no rows until it succeeds (tried again before a write, at most every
RESUME_RETRY_S): a write meanwhile carries an owed mark. (A tag of that run alone instead, as
before, added a writer's rows to every later start's read at each such start, for ever.)

Rows are derived data: without their retention policy (a database set up by an older `citysense
schema`, or the policy dropped) a keeper stops keeping them rather than hold the readings back,
and looks for the policy again every RECHECK_S seconds. The API trusts rows only once a full load
wrote them and the point saying so, which lives in the same policy: until the policy is back and
such a load ran, it reads the readings. Every write whose readings go without rows carries an
owed mark (wire.latest), before its change marks when this keeper is off, right after the write
when a row was refused, so that a full load that ran meanwhile cannot call the rows whole over
them.

Only registered devices get rows (the API keeps no state of the others), so what this keeps is
bounded by the registry: a dict entry keyed by the registry's own id string, and the time's
integer (about 70 bytes a device: 40 for the dict, measured with tracemalloc over 100,000
devices by hand, and a 32-byte int). The masks read back at start (see _held_mask) add at most
a dict entry a device registered then (about 50 bytes: the dict's share, the tuple of each
(profile, mask) held once for every row of it), and an entry goes as soon as a write carries
its device's row again (stored, or given up: unsure).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from common.errors import InfluxError, InfluxNotFound
from common.influx import InfluxClient, quote_ident
from device_profiles import Device, Profile
from ingest.encode import reading_of
from ingest.stages import Enriched
from ingest.write import BadLine, GaveUp, Writer
from wire import latest as layout
from wire.retention import qualified

log = logging.getLogger(__name__)

RECHECK_S = 60.0  # how often a keeper without the `latest` policy looks for it again
RESUME_RETRY_S = 5.0  # how often a keeper whose rows were not read back reads them again
# Writes whose rows' masks are remembered (LatestRows.rows: a message of a timestamp already
# stored, in a later batch). Two: a device's messages of one timestamp come milliseconds apart,
# so a batch boundary between them leaves them in consecutive writes. A write's masks are one
# entry per row it carried (about 150 bytes), a fraction of what its batch held, which the
# byte budget (ingest.budget) bounds.
RECENT_WRITES = 2


Held = tuple[int, str, int]  # a row's reading time, measurement and `has` mask


@dataclass(frozen=True, slots=True)
class Pending:
    """Rows a write carries, remembered as stored once the write succeeded."""

    lines: list[str]
    # Per device (the registry's id string: held once), its row's reading time, measurement
    # and `has` mask (wire.latest.row_line).
    masks: dict[str, Held] = field(default_factory=dict)
    owed: bool = False  # readings that get no rows: the keeper was off

    @property
    def newest(self) -> dict[str, int]:
        """Per device, the reading time of its row."""
        return {device_id: held[0] for device_id, held in self.masks.items()}


@dataclass(frozen=True, slots=True)
class Written:
    """What LatestRows.write did: the lines refused by the readings' write and by the rows' and
    marks' write, the rows it made, and the readings InfluxDB took (announced, given rows)."""

    bad: list[BadLine]
    rest: list[BadLine]
    rows: Pending
    kept: Sequence[Enriched]


class LatestRows:
    def __init__(
        self,
        writer: str,
        profiles: Mapping[str, Profile],
        registry: Callable[[], Mapping[str, Device]],
    ) -> None:
        self.writer = writer
        self._registry = registry
        self._keys = {
            name: layout.encoded_keys(profile.measurement, profile.field_types())
            for name, profile in profiles.items()
        }
        self.enabled = True
        self.resumed = False  # this writer's rows were read back (resume)
        self._asked = False  # resume was called: rows() before it is a caller's bug
        self._recheck_at = 0.0  # time.monotonic() when a disabled keeper looks again
        self._stored: dict[str, int] = {}
        self._recent: deque[dict[str, Held]] = deque(maxlen=RECENT_WRITES)
        # Per registered device, the measurement and `has` mask of its row read back by resume,
        # while that row holds the device's newest stored time (see _held_mask).
        self._resumed: dict[str, tuple[str, int]] = {}
        self._series: dict[tuple[str, str], str] = {}
        self._measurements = frozenset(p.measurement for p in profiles.values())

    def write(
        self,
        writer: Writer,
        data: list[str],
        readings: Sequence[Enriched],
        marks: list[str],
        *,
        deadline: float | None = None,
        stored: list[str] | None = None,
    ) -> Written:
        """`data` (readings' lines, dead letters), then the rows of the readings InfluxDB took,
        the owed mark if any, then `marks` (change marks: wire.latest's order). A reading
        whose lines were all refused (a field's type changed) gets no row: the row of a value
        that is only a dead letter would be served as the device's latest for as long as it
        stays its newest. `stored` (Writer.write) gets the marks as stored. Raises what
        Writer.write raises; giving up on the rows' write, their devices are `unsure` first
        (InfluxDB may have taken them)."""
        bad = writer.write(data, deadline)
        kept = self.kept(readings, data, bad)
        rows = self.rows(kept)
        try:
            rest = writer.write([*rows.lines, *self.owed(rows.owed), *marks], deadline, stored)
        except GaveUp:
            self.unsure(rows)
            raise
        return Written(bad, rest, rows, kept)

    def kept(
        self, readings: Sequence[Enriched], data: Sequence[str], bad: Sequence[BadLine]
    ) -> Sequence[Enriched]:
        """`readings` but those no line of which InfluxDB stored (`bad`: what it refused of
        `data`). Parses lines only when some were refused, which is never expected."""
        if not bad:
            return readings
        refused_lines = {item.line for item in bad}
        refused = {key for line in refused_lines if (key := self._key(line)) is not None}
        if not refused:
            return readings  # dead letters or marks refused, no reading
        # A point of two lines (two messages of one time), one stored: the point is there.
        taken = {
            key
            for line in data
            if line not in refused_lines and (key := self._key(line)) in refused
        }
        gone = refused - taken
        return [r for r in readings if (r.measurement, r.device_id, r.time_ns) not in gone]

    def _key(self, line: str) -> tuple[str, str, int] | None:
        reading = reading_of(line, self._measurements)
        return (
            None if reading is None else (reading.measurement, reading.device_id, reading.time_ns)
        )

    def resume(self, client: InfluxClient) -> None:
        """The times this writer's rows hold, and their masks, from InfluxDB. Without the
        `latest` policy (a database set up by an older `citysense schema`) no rows are kept
        until it is there: the API then finds no complete rows and loads from the readings.
        InfluxDB failing: no rows until a later read succeeds (see the module's doc)."""
        # Identifiers of the layout, the writer bound as a parameter.
        query = (
            f"SELECT {quote_ident(layout.DEVICE)}, {quote_ident(layout.AT)}, "  # noqa: S608
            f"{quote_ident(layout.HAS)} FROM {qualified(layout.MEASUREMENT)} "
            f"WHERE {quote_ident(layout.WRITER_TAG)} = $w "
            f"GROUP BY {quote_ident(layout.PROFILE_TAG)}"
        )
        self._asked = True
        try:
            answer = client.query(query, {"w": self.writer}, epoch="ns")
        except InfluxNotFound as exc:
            self._disable(str(exc))
            return
        except InfluxError as exc:
            log.warning(
                "latest rows of %s not read back (%s): none kept until they are, trying again "
                "in %.0f s",
                self.writer,
                exc,
                RESUME_RETRY_S,
            )
            self._recheck_at = time.monotonic() + RESUME_RETRY_S
            return
        if not self.enabled:
            log.info("the latest policy is there: %s keeps latest rows again", self.writer)
            self.enabled = True
        self.resumed = True
        stored = self._stored
        masks: dict[str, Held] = {}  # per device: its current profile's row
        registry = self._registry()
        for statement in answer:
            for found in statement:
                at_device = found.columns.index(layout.DEVICE)
                at_time = found.columns.index(layout.AT)
                # Rows written before `has` (by an older version) may be all there are.
                at_has = found.columns.index(layout.HAS) if layout.HAS in found.columns else -1
                measurement = found.tags.get(layout.PROFILE_TAG, "")
                keys = self._keys.get(measurement)
                for row in found.values:
                    device, time_ns = row[at_device], row[at_time]
                    if not (isinstance(device, str) and isinstance(time_ns, int)):
                        continue
                    stored[device] = max(time_ns, stored.get(device, time_ns))
                    known = registry.get(device)
                    if keys is None or known is None or at_has < 0:
                        continue
                    mask = layout.mask_of(row[at_has], keys.digest)
                    if known.profile == measurement and mask is not None:
                        masks[known.device_id] = (time_ns, measurement, mask)
        self._resumed = self._newest_masks(masks)

    def _newest_masks(self, masks: dict[str, Held]) -> dict[str, tuple[str, int]]:
        """Of the rows' masks read back, those of rows that hold their device's newest stored
        time (a row of another profile may be newer), each (measurement, mask) held once."""
        shared: dict[tuple[str, int], tuple[str, int]] = {}
        return {
            device: shared.setdefault((measurement, mask), (measurement, mask))
            for device, (time_ns, measurement, mask) in masks.items()
            if self._stored.get(device) == time_ns
        }

    def recheck(self, client: InfluxClient) -> None:
        """A keeper that found no `latest` policy, or could not read its rows back: tries
        again, at most every RECHECK_S (RESUME_RETRY_S) seconds (one query)."""
        if (self.enabled and self.resumed) or time.monotonic() < self._recheck_at:
            return
        self.resume(client)

    def _disable(self, why: str) -> None:
        if self.enabled:
            log.error(
                "no latest rows kept by %s (%s): run `citysense schema` to keep them; looking "
                "again every %.0f s",
                self.writer,
                why,
                RECHECK_S,
            )
        self.enabled = False
        self._recheck_at = time.monotonic() + RECHECK_S

    def rows(self, readings: Iterable[Enriched]) -> Pending:
        """The rows for the newest reading of each registered device among `readings` that is
        newer than what this writer's row holds."""
        if not self._asked:
            # Rows made without reading back what the writer holds could move one back.
            raise RuntimeError(f"latest rows of {self.writer} asked for before resume()")
        if not (self.enabled and self.resumed):
            return Pending([], owed=any(True for _ in readings))
        newest: dict[str, Enriched] = {}
        for reading in readings:
            known = newest.get(reading.device_id)
            if known is None or reading.time_ns > known.time_ns:
                newest[reading.device_id] = reading
            elif reading.time_ns == known.time_ns and reading.measurement == known.measurement:
                # One InfluxDB point: the later message's fields merge over the earlier's. (In
                # a later batch: see _held_mask.)
                fields = {**known.fields, **reading.fields}
                newest[reading.device_id] = Enriched(
                    known.measurement, known.device_id, known.district, known.time_ns, fields
                )
        registry = self._registry()
        lines: list[str] = []
        masks: dict[str, Held] = {}
        for device_id, reading in newest.items():
            device = registry.get(device_id)
            keys = self._keys.get(reading.measurement)
            if device is None or keys is None or device.profile != reading.measurement:
                continue
            also, stored = 0, self._stored.get(device_id, -1)
            if reading.time_ns <= stored:
                held = None
                if reading.time_ns == stored:
                    held = self._held_mask(device_id, stored, reading.measurement)
                if held is None:
                    continue  # older than the row (or see _held_mask): never moves it back
                also = held
            bucket, slot = layout.slot_of(device_id)
            line, mask = layout.row_line(
                self._series_of(reading.measurement, bucket),
                device_id,
                time_ns=reading.time_ns,
                keys=keys,
                fields=reading.fields,
                slot=slot,
                also=also,
            )
            lines.append(line)
            masks[device.device_id] = (reading.time_ns, reading.measurement, mask)
        return Pending(lines, masks)

    def _held_mask(self, device_id: str, time_ns: int, measurement: str) -> int | None:
        """The `has` mask of the row this writer stored at `time_ns` for the device under
        `measurement`, if one of its last RECENT_WRITES writes did and InfluxDB took it (see
        settle): a message of that timestamp came in a later batch, and the row is written
        again with its fields and both masks (InfluxDB merges the row's point as it merged the
        reading's). None: a row not remembered (it keeps the first message's fields, and says
        so, until the device's next reading).

        After a restart the row's mask read back (resume) stands in: a message of the stored
        timestamp held by the broker over the restart, or delivered again. `time_ns` is the
        newest time stored (rows() asks only then), which that row holds: its entry goes as soon
        as a write of this keeper carries a row of the device (stored, unsure)."""
        for masks in self._recent:
            held = masks.get(device_id)
            if held is not None and held[0] == time_ns and held[1] == measurement:
                return held[2]
        resumed = self._resumed.get(device_id)
        return resumed[1] if resumed is not None and resumed[0] == measurement else None

    def stored(self, pending: Pending, *, rows_taken: bool = True) -> None:
        """`pending`'s rows are stored: their times remembered, and their masks too if InfluxDB
        took every row (`rows_taken`): a refused row's mask would name fields InfluxDB never
        wrote, and a later message of its time would take an older reading's values for them.
        A write with no rows, or a refused one, leaves the masks remembered as they were."""
        self._stored.update(pending.newest)
        if self._resumed:
            # Its row written again (refused or not), its stored time maybe moved on: the mask
            # read back may no longer be the row's.
            for device_id in pending.masks:
                self._resumed.pop(device_id, None)
        if pending.masks and rows_taken:
            self._recent.appendleft(pending.masks)

    def unsure(self, pending: Pending) -> None:
        """The write that carried `pending` gave up (its batch went to the spool): InfluxDB may
        have taken its rows (they go before the marks, which may be what failed) or not. The
        masks of those devices are forgotten, read back or remembered: the row may now hold a
        newer reading's fields, and a message of the remembered time written with that mask
        would serve them as its own. Such a message then leaves the row as it is (_held_mask).
        Their stored times are left as they were: raised to rows InfluxDB may not hold, a
        reading stored later, newer than the row, would find its row skipped while its change
        mark says it is there; left, a late reading between the two times moves the row back,
        to a reading that is whole, and the spool's drainer keeps the newer one's row under its
        own tag (a reader takes the newest over writers)."""
        for device_id in pending.masks:
            self._resumed.pop(device_id, None)
            for masks in self._recent:  # the stored writes' own dicts: nothing else reads them
                masks.pop(device_id, None)

    def settle(self, pending: Pending, bad: list[BadLine]) -> tuple[list[BadLine], int]:
        """After the write that carried `pending`: its rows remembered as stored, and `bad`
        without the rows InfluxDB refused (no readings to dead-letter), with how many. None is
        refused unless a row's layout is wrong (its keys are typed: wire.latest); that device's
        row stays behind until its next reading, so each is logged as an error."""
        refused = [b for b in bad if layout.is_row(b.line)]
        missing = [b for b in refused if b.missing]
        if missing:
            self._disable(missing[0].error)  # stored nothing; said once, not once a row
        for item in refused:
            if not item.missing:
                log.error("InfluxDB refused a latest row: %s", item.error)
        if not missing:
            self.stored(pending, rows_taken=not refused)
        if not refused:
            return bad, 0
        return [b for b in bad if not layout.is_row(b.line)], len(refused)

    def owed(self, owing: bool) -> list[str]:
        """The owed mark (wire.latest) if readings go without their rows: this keeper off (known
        before the write, `Pending.owed`: the mark goes in it, after the readings and before
        their change marks) or rows refused (known after it: written next). Until a full load
        after it, the API reads the readings rather than the rows."""
        return [layout.owed_line(self.writer)] if owing else []

    def owe(self, bad: list[BadLine], refused: int, writer: Writer) -> tuple[list[BadLine], int]:
        """After `settle` (`refused` rows): the owed mark stored now if rows were refused, and
        `bad` without the owed mark the write carried (this keeper off), which is not a reading
        to dead-letter. Returns the readings refused and how many owed marks InfluxDB refused,
        each logged: never expected (the mark is ours), it must not pass silently. Raises
        Stopped (Writer.write)."""
        carried = [item for item in bad if layout.is_owed(item.line)]
        lost = [*carried, *writer.write(self.owed(refused > 0))]
        for item in lost:
            log.critical("could not store an owed mark: %s: %s", item.error, item.line)
        if carried:
            bad = [item for item in bad if not layout.is_owed(item.line)]
        return bad, len(lost)

    def _series_of(self, measurement: str, bucket: str) -> str:
        key = (measurement, bucket)
        known = self._series.get(key)
        if known is None:
            known = self._series[key] = layout.row_series(measurement, self.writer, bucket)
        return known

    def __len__(self) -> int:
        return len(self._stored)
