"""Compacting the latest rows of the full load the complete point names (wire.latest).

Why: a start from the rows reads every writer's, and InfluxDB's cost is per row and field
(bench.api_memory: one writer's 100,000 rows 1.7 s of a 3.7 s start, three writers' 4.5 s of
6.6 s). After an upgrade the set-up's build writes a row of every device; the ingest workers
then write their own as devices report, and the build's rows are read at every start though
another writer holds a row as new for almost every device. Compacted, the full load's rows
hold only the devices no other writer has a row as new for (those silent since), under a new
full-load tag that the complete point then names, and a start reads about one row per
device per ingest worker.

Why it stays whole: the API's state holds, for every device, a reading at least as new as any
row the named full load holds (it was loaded from them, or from the readings, and the feed
only adds newer); other writers' rows only ever move forward. So every device's newest row
over the other writers and the new full load's is at least what it was over the other writers
and the old one — checked, not assumed: a state loaded before the named rows were written (a
snapshot older than an import's build) holds older readings than they do, and then nothing is
compacted (`behind`). The point is written only if the newest owed mark and the point are
still those read before (api.live.service.Live.compact_rows).
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping

from api.live.state import NO_TIME


def newest_unknown(size: int) -> array[int]:
    """Other writers' newest reading time per registered device, none known yet."""
    return array("q", [NO_TIME]) * size


def take_rows(
    newest: array[int],
    index: Mapping[str, int],
    device_ids: list[str],
    times: list[int],
) -> None:
    """Other writers' rows (device ids and reading times) into `newest`: a device's greatest."""
    for device_id, time_ns in zip(device_ids, times, strict=True):
        at = index.get(device_id)
        if at is not None and time_ns > newest[at]:
            newest[at] = time_ns


def behind(times: array[int], newest: array[int], named: array[int]) -> int:
    """How many devices the named full load holds a row newer than both the state's reading
    and every other writer's row for: a state loaded before those rows were written (a
    snapshot older than an import's build). Compacted from it, they would move back."""
    return sum(
        1
        for mine, theirs, its in zip(times, newest, named, strict=True)
        if its > mine and its > theirs
    )


def held(named: array[int]) -> int:
    """How many registered devices the named full load holds a row of."""
    return sum(1 for its in named if its != NO_TIME)


def uncovered(times: array[int], newest: array[int]) -> list[int]:
    """The devices (indices) whose reading in the state no other writer's row holds as new."""
    return [n for n, (mine, theirs) in enumerate(zip(times, newest, strict=True)) if mine > theirs]
