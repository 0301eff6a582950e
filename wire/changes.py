"""Change marks: how ingest tells readers of InfluxDB which windows of data have changed.

Every write of readings is followed, before its messages are acknowledged, by one mark per
(profile, district, 15-minute window) it wrote into: a point of measurement `citysense_changes`,
tags `profile` (the profile's measurement) and `district`, timestamped at the window's start,
with one integer field `stamp` drawn at random per send. A later write into the same window
overwrites the mark with another stamp, so the sum of the stamps over a range of windows changes
whenever any of them was written again: the API compares that sum with the one it saw when it
computed an aggregate, and recomputes only the windows whose sum moved (late readings, replayed
dead letters, spooled batches written after an outage).

Fifteen minutes because every time zone's offset is a multiple of it: an hour, a day, a week or
a month in any zone is a whole number of these windows.

A writer that does not announce its readings on the state feed (wire.statefeed) — replay, and a
worker writing what it spooled during an outage — also sets the integer field `quiet` to its
stamp. A later announced write into the window overwrites `stamp` but not `quiet` (fields
written under one timestamp merge), so a reader that trusts the feed for the announced stamps
still sees that something unannounced landed there, and reads it: without it, the announced
write's stamp hid the unannounced one for good. `identity` folds both into the one integer a
reader compares (api.live.coverage).
"""

from __future__ import annotations

MEASUREMENT = "citysense_changes"
WINDOW_S = 900
WINDOW_NS = WINDOW_S * 1_000_000_000
STAMP_BITS = 31  # sums of many stamps stay far inside a signed 64-bit integer
QUIET = "quiet"
_STAMP_MASK = (1 << STAMP_BITS) - 1


def window_of(time_ns: int) -> int:
    """The start (ns since the epoch) of the change window holding `time_ns`."""
    return time_ns - time_ns % WINDOW_NS


def identity(stamp: int, quiet: int | None) -> int:
    """One integer for a window's mark: the stamp itself if no unannounced write left its
    `quiet` there, else a negative number that no stamp equals and `split` takes apart."""
    if quiet is None:
        return stamp
    return -(((quiet & _STAMP_MASK) << STAMP_BITS) | (stamp & _STAMP_MASK)) - 1


def split(mark_identity: int) -> tuple[int, int | None]:
    """(stamp, quiet or None) of an `identity`."""
    if mark_identity >= 0:
        return mark_identity, None
    folded = -(mark_identity + 1)
    return folded & _STAMP_MASK, folded >> STAMP_BITS
