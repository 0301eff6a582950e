"""Changes: the marks a write carries so that readers know which windows it touched.

The layout is the contract's (device_profiles.changes); this module only encodes it. Marks go
at the end of a write's lines, after the readings they announce, and every attempt to send them
draws a fresh stamp (`restamp`): a resend of an old stamp — a retry after a timeout that was in
fact stored, a batch spooled during an outage — could otherwise put back a mark that a reader
has already seen and hide the writes made in between.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from ingest.stages import Enriched
from wire.changes import MEASUREMENT, QUIET, STAMP_BITS, window_of
from wire.lineproto import line, parse_line
from wire.statefeed import Mark

Change = tuple[str, str, int]  # measurement, district, window start (ns)

_PREFIX = MEASUREMENT + ","


def changes_of(readings: Iterable[Enriched]) -> set[Change]:
    return {(r.measurement, r.district, window_of(r.time_ns)) for r in readings}


def change_lines(changes: Iterable[Change], *, quiet: bool = False) -> list[str]:
    """One mark per window, all with one fresh stamp: the stamp of this write. `quiet`: a
    write whose readings are not announced on the state feed (wire.changes says why)."""
    stamp = random.getrandbits(STAMP_BITS)
    fields: dict[str, float | int | bool | str] = {"stamp": stamp}
    if quiet:
        fields[QUIET] = stamp
    return [
        line(MEASUREMENT, {"profile": m, "district": d}, fields, window)
        for m, d, window in sorted(changes)
    ]


def is_change(line_text: str) -> bool:
    return line_text.startswith(_PREFIX)


def split_marks(lines: list[str]) -> tuple[list[str], list[str]]:
    """The lines before the marks at their end, and those marks."""
    first = len(lines)
    while first and is_change(lines[first - 1]):
        first -= 1
    return lines[:first], lines[first:]


def restamp(lines: list[str]) -> list[str]:
    """`lines` with the marks at their end given one fresh stamp."""
    data, marks = split_marks(lines)
    if not marks:
        return lines
    stamp = random.getrandbits(STAMP_BITS)
    fresh = []
    for mark in marks:
        point = parse_line(mark)
        fields: dict[str, float | int | bool | str] = {"stamp": stamp}
        if QUIET in point.fields:
            fields[QUIET] = stamp  # stays quiet
        fresh.append(line(MEASUREMENT, point.tags, fields, point.time_ns))
    return data + fresh


def marks_of(stored: Iterable[str]) -> list[Mark]:
    """The marks of `stored` mark lines (as the writer stored them), for the state feed."""
    marks = []
    for text in stored:
        point = parse_line(text)
        stamp = point.fields.get("stamp")
        if isinstance(stamp, int):
            marks.append((point.tags["profile"], point.tags["district"], point.time_ns, stamp))
    return marks
