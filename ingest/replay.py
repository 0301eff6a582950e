"""`citysense replay`: re-ingest dead letters after a profile or registry fix.

Each selected dead letter goes through today's pipeline as if it had just arrived at its original
receive time (so age limits and receive-time stamping decide as they did then). Readings that now
pass are written; the dead letter itself is marked — `replayed_at` and `replay_result` merged onto
the same point — never copied. Replaying twice stores nothing twice: readings overwrite
themselves, marked letters are skipped unless `--again`. Letters that still fail stay as they are,
with the new reason in `replay_result`, and no new dead letter is written for them.

One run at a time: every run keeps its latest rows (ingest.latest) under the writer tag
`replay`, read back at its start only, so two at once may move a device's row back. (A tag per
run would add its rows to every API start's read for ever: no one compacts a writer's rows.)
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from common.influx import InfluxClient
from common.settings import settings_problems
from device_profiles import ContractError
from ingest.changes import change_lines, changes_of
from ingest.encode import reading_of
from ingest.latest import LatestRows
from ingest.pipeline import Pipeline
from ingest.settings import IngestSettings
from ingest.stages import Enriched, Received
from ingest.stats import Stats
from ingest.write import BadLine, Writer
from wire.deadletters import MEASUREMENT, TAGS, decode_payload, replay_mark_line
from wire.reasons import Reason
from wire.retention import qualified

log = logging.getLogger(__name__)

PAGE = 2000
AHEAD_NS = 86_400 * 10**9  # letters stamped up to this far ahead of now are replayed too
# Replaying these would undo what they protect against, unless asked for by name.
# A retained copy without a timestamp has no time it was measured at: replayed, it would be
# stamped when it was received, which is what refusing it prevents (always refused again).
NOT_BY_DEFAULT = frozenset(
    {
        Reason.DUPLICATE,
        Reason.TIMESTAMP_CONFLICT,
        Reason.WRITE_REJECTED,
        Reason.RETAINED_WITHOUT_TIMESTAMP,
    }
)


@dataclass(frozen=True, slots=True)
class Selection:
    reasons: tuple[str, ...]
    profile: str | None
    device_id: str | None
    start_ns: int
    end_ns: int
    again: bool
    limit: int | None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reason",
        action="append",
        default=[],
        choices=[r.value for r in Reason],
        help="only these reasons (repeatable; default: all replayable)",
    )
    parser.add_argument("--profile", help="only dead letters of this profile")
    parser.add_argument("--device", help="only dead letters of this device id")
    parser.add_argument(
        "--since",
        type=float,
        default=30 * 86400.0,
        help="seconds back from now to look (default 30 days)",
    )
    parser.add_argument("--limit", type=int, help="at most this many dead letters")
    parser.add_argument("--again", action="store_true", help="also those already replayed")
    parser.add_argument("--dry-run", action="store_true", help="report, write nothing")
    parser.add_argument("--no-progress", action="store_true")


def select(client: InfluxClient, sel: Selection, page: int = PAGE) -> Iterator[dict[str, Any]]:
    """The selected dead letters in time order, at most `sel.limit` of them."""
    seen = 0
    for row in _letters(client, sel, page):
        if _wanted(row, sel):
            yield row
            seen += 1
            if sel.limit is not None and seen >= sel.limit:
                return


def _letters(client: InfluxClient, sel: Selection, page: int) -> Iterator[dict[str, Any]]:
    """Every dead letter of the selection's profile, device and time range, in time order, a
    page at a time; user values only as bound parameters.

    Letters of different series (reason, profile, worker) may share a timestamp. A page that
    ends inside such a group is completed by reading that one nanosecond whole — a series has at
    most one point there — before the next page starts after it: resuming after the page's last
    time skipped the rest of its group, which were then never replayed."""
    conditions = ["time >= $start", "time < $end"]
    params: dict[str, str | int] = {}
    if sel.profile:
        conditions.append("profile = $profile")
        params["profile"] = sel.profile
    if sel.device_id:
        conditions.append("device_id = $device")
        params["device"] = sel.device_id
    # Only our own fixed conditions are joined here; every value is a bound parameter.
    whole = f"SELECT * FROM {qualified(MEASUREMENT)} WHERE {' AND '.join(conditions)}"  # noqa: S608
    paged = f"{whole} LIMIT {int(page)}"
    cursor = sel.start_ns
    while True:
        batch = _rows(
            client.query(paged, {**params, "start": cursor, "end": sel.end_ns}, epoch="ns")
        )
        yield from batch
        if len(batch) < page:
            return
        last = int(batch[-1]["time"])
        taken = {_series(row) for row in batch if int(row["time"]) == last}
        group = _rows(client.query(whole, {**params, "start": last, "end": last + 1}, epoch="ns"))
        yield from (row for row in group if _series(row) not in taken)
        cursor = last + 1


def _rows(result: list[Any]) -> list[dict[str, Any]]:
    return [row for s in (result[0] if result else []) for row in s.rows()]


def _series(row: dict[str, Any]) -> tuple[object, ...]:
    return tuple(row.get(tag) for tag in TAGS)


def _wanted(row: dict[str, Any], sel: Selection) -> bool:
    reason = str(row.get("reason"))
    if sel.reasons:
        if reason not in sel.reasons:
            return False
    elif reason in NOT_BY_DEFAULT:
        return False
    return sel.again or row.get("replayed_at") is None


def payload_of(row: dict[str, Any]) -> bytes | None:
    """The original bytes (for write_rejected, the refused line), or None when they cannot be
    had (truncated)."""
    if row.get("truncated"):
        return None
    return decode_payload(str(row.get("payload", "")), row.get("payload_encoding"))


class Replayer:
    def __init__(self, pipeline: Pipeline, writer: Writer, latest: LatestRows) -> None:
        self._pipeline = pipeline
        self._writer = writer
        # A replayed reading may be its device's newest (every reading it sent was refused
        # until the fix): it gets its row (wire.latest), kept under the writer tag `replay`.
        self._latest = latest
        self.results: Counter[str] = Counter()
        # Owed marks InfluxDB refused: the API may then start from rows that lack replayed
        # readings (wire.latest), so the run ends failed, saying so.
        self.owed_lost = 0
        # Replay marks InfluxDB refused: those letters read as never replayed and are replayed
        # again by the next run (their readings overwrite themselves); the run ends failed.
        self.marks_refused = 0

    def _write(self, data: list[str], readings: list[Enriched]) -> list[BadLine]:
        """Readings, their latest rows, then their (quiet) change marks: wire.latest's order."""
        marks = change_lines(changes_of(readings), quiet=True)
        done = self._latest.write(self._writer, data, readings, marks)
        rest, refused = self._latest.settle(done.rows, done.rest)
        rest, lost = self._latest.owe(rest, refused, self._writer)
        self.owed_lost += lost
        return done.bad + rest

    def replay(self, row: dict[str, Any], dry_run: bool) -> str:
        payload = payload_of(row)
        if payload is None:
            return self._mark(row, "not replayable", dry_run)
        if row.get("reason") == Reason.WRITE_REJECTED:
            return self._rewrite(row, payload.decode(errors="replace"), dry_run)
        # A reading without a timestamp is stamped when the message was received, as it was
        # then: stamped with the letter's own time, the part stored at the time (the drop-field
        # policy, one letter per field) was added again, once a letter. Letters from before
        # `received_ns` was kept: their own time, as before.
        received_ns = row.get("received_ns")
        at = int(received_ns) if isinstance(received_ns, int) and received_ns else int(row["time"])
        retained = row.get("reason") == Reason.RETAINED_WITHOUT_TIMESTAMP
        received = Received(str(row.get("topic", "")), payload, 0, 0, at, retain=retained)
        outcome = self._pipeline.process(received)
        reasons = ",".join(sorted({r.reason.value for r in outcome.rejected}))
        if outcome.rejected and not outcome.readings:
            return self._mark(row, f"still rejected: {reasons}", dry_run)
        # Data lines come first in an outcome; the dead letters it would add are not wanted.
        data = outcome.lines[: outcome.readings]
        bad = [] if dry_run else self._write(data, outcome.accepted)
        if bad:
            return self._mark(row, f"write rejected: {bad[0].error[:100]}", dry_run)
        if outcome.rejected:
            # Some of its readings (an array's, or fields a profile drops) still fail: said, not
            # "stored", which reads as done and is not replayed again without --again.
            return self._mark(row, f"partly stored, still rejected: {reasons}", dry_run)
        return self._mark(row, "stored", dry_run)

    def _rewrite(self, row: dict[str, Any], line: str, dry_run: bool) -> str:
        """A line InfluxDB refused (a field type conflict, say), written again once the operator
        removed the cause; with the change mark of its window, like any write."""
        reading = reading_of(line, set(self._pipeline.measurements))
        if reading is None:
            return self._mark(row, "not replayable: not a reading's line", dry_run)
        if dry_run:
            return self._mark(row, "stored", dry_run)
        bad = self._write([line], [reading])
        if bad:
            return self._mark(row, f"write rejected: {bad[0].error[:100]}", dry_run)
        return self._mark(row, "stored", dry_run)

    def _mark(self, row: dict[str, Any], result: str, dry_run: bool) -> str:
        self.results[result.split(":", maxsplit=1)[0]] += 1
        if not dry_run:
            tags = {t: str(row[t]) for t in TAGS if row.get(t) is not None}
            mark = replay_mark_line(tags, result, time.time_ns(), int(row["time"]))
            for bad in self._writer.write([mark]):
                self.marks_refused += 1
                log.error(
                    "the mark %r of the dead letter at %s was refused: %s",
                    result,
                    row["time"],
                    bad.error[:200],
                )
        return result


def main(args: argparse.Namespace) -> int:
    try:
        settings = IngestSettings(http_port=0)
        profiles, registry = settings.load_contract()
        variants = settings.load_variants(profiles)
    except ValidationError as exc:
        print(f"citysense replay: invalid settings:\n{settings_problems(exc)}", file=sys.stderr)
        return 2
    except ContractError as exc:
        print(f"citysense replay: invalid profiles or registry:\n{exc}", file=sys.stderr)
        return 2
    now = time.time_ns()
    selection = Selection(
        tuple(args.reason),
        args.profile,
        args.device,
        now - int(args.since * 1e9),
        # Ahead of now too: letters stay after the last one when the clock is stepped back
        # (ingest.deadletter), so a clock that ran fast leaves them stamped in its future.
        now + AHEAD_NS,
        args.again,
        args.limit,
    )
    stats = Stats()
    pipeline = Pipeline(
        profiles,
        registry,
        settings.topics,
        stats,
        limits=settings.limits,
        variants=variants,
        accept_unknown_devices=settings.unknown_devices == "accept",
    )
    with InfluxClient(settings.influx) as client:
        writer = Writer(client, stats, threading.Event(), settings.retry)
        latest = LatestRows("replay", profiles, lambda: registry.devices)
        latest.resume(client)
        replayer = Replayer(pipeline, writer, latest)
        done = 0
        for row in select(client, selection):
            replayer.replay(row, args.dry_run)
            done += 1
            if not args.no_progress and done % 100 == 0:
                print(f"\rreplayed {done}: {dict(replayer.results)}", end="", file=sys.stderr)
    if not args.no_progress:
        print(f"\rreplayed {done}: {dict(replayer.results)}", file=sys.stderr)
    print(
        orjson.dumps(
            {
                "replayed": done,
                "results": dict(replayer.results),
                "dry_run": args.dry_run,
                "owed_marks_lost": replayer.owed_lost,
                "marks_refused": replayer.marks_refused,
            }
        ).decode()
    )
    if replayer.owed_lost:
        print(
            f"citysense replay: {replayer.owed_lost} owed mark(s) refused by InfluxDB (logged "
            "above): the latest rows may lack replayed readings, and an API starting from them "
            "would miss them; start the APIs once with CITYSENSE_API_STATE_FROM_ROWS=false "
            "after the cause is fixed",
            file=sys.stderr,
        )
    if replayer.marks_refused:
        print(
            f"citysense replay: InfluxDB refused {replayer.marks_refused} replay mark(s) (logged "
            "above): those dead letters still read as not replayed, and the next run replays "
            "them again",
            file=sys.stderr,
        )
    return 1 if replayer.owed_lost or replayer.marks_refused else 0
