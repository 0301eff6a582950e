"""Cells: aggregates across devices, kept per (question, group, window) until their data changes.

An aggregate across a city's devices costs InfluxDB seconds; asked again, it costs nothing if no
reading under it changed. Ingest marks every 15-minute window it writes into
(device_profiles.changes); a cell keeps the signature of the marks under it from just before it
was computed, and is reused while that signature holds. A window that is still filling changes
with every batch, so a cell whose signature moved is still served while it is younger than
`max_staleness` seconds. Together: an answer reflects every reading stored `max_staleness`
seconds before it, late readings in past windows included.

Readings put into InfluxDB by other means than ingest and replay carry no marks; a cell over
them is computed once and kept until a marked write touches its windows or the API restarts.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

from api.core.readings import Value
from common.influx import Series
from wire.changes import window_of

Signature = tuple[int, int]  # the sum and the count of the stamps under a cell
# How long the district tags stored per profile are taken as read: districts appear seldom, and
# a marked write's district is in the marks of every question anyway (aggregates._every_district).
DISTRICTS_FRESH_S = 60.0


@dataclass(frozen=True, slots=True)
class Cell:
    value: Value | None  # None: no reading in the window
    devices: int
    as_of_ns: int = 0  # wall clock when the marks were read: the data is as of then


@dataclass(frozen=True, slots=True)
class _Kept:
    cell: Cell
    signature: Signature
    computed: float


@dataclass(frozen=True, slots=True)
class _District:
    windows: list[int]
    stamps: list[int]  # running sums: stamps[i] is the sum of the first i windows' stamps
    counts: list[int]


class Marks:
    """The change marks of one profile over a span, by district and window."""

    def __init__(self, by_district: dict[str, list[tuple[int, int, int]]]) -> None:
        self._districts = {
            name: _District(
                [w for w, _, _ in rows],
                [0, *itertools.accumulate(s for _, s, _ in rows)],
                [0, *itertools.accumulate(n for _, _, n in rows)],
            )
            for name, rows in by_district.items()
        }

    @classmethod
    def from_series(cls, series: Iterable[Series]) -> Marks:
        """From the answer of api.query.changes (rows: time, s, n; one series per district)."""
        by_district: dict[str, list[tuple[int, int, int]]] = {}
        for one in series:
            rows = by_district.setdefault(one.tags.get("district", ""), [])
            rows.extend((int(t), int(s or 0), int(n or 0)) for t, s, n in one.values)
        for rows in by_district.values():
            rows.sort()
        return cls(by_district)

    def districts(self) -> list[str]:
        return list(self._districts)

    def signature(self, districts: Iterable[str] | None, begin_ns: int, end_ns: int) -> Signature:
        """Of the change windows overlapping [begin, end), in `districts` (None: all)."""
        names = self._districts.keys() if districts is None else districts
        stamps = count = 0
        first = window_of(begin_ns)
        for name in names:
            district = self._districts.get(name)
            if district is None:
                continue
            lo = bisect.bisect_left(district.windows, first)
            hi = bisect.bisect_left(district.windows, end_ns)
            stamps += district.stamps[hi] - district.stamps[lo]
            count += district.counts[hi] - district.counts[lo]
        return stamps, count


# A change-marks answer is reused by asks arriving within this long of its read (a screen's
# panels, many users on one question: one InfluxDB read for all); kept below max_staleness, so
# the guarantee holds (CellCache.marks).
MARKS_REUSE_S = 1.0
MARKS_KEPT = 32  # marks answers held for reuse at once, at most (each a profile's span)


class CellCache:
    """Computed cells, least recently used dropped first beyond `max_cells`."""

    def __init__(
        self,
        max_cells: int,
        max_staleness: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_cells = max_cells
        self.max_staleness = max_staleness
        self._clock = clock
        self._kept: OrderedDict[Hashable, _Kept] = OrderedDict()
        self._districts: dict[str, tuple[float, list[str]]] = {}  # one entry per profile
        self.marks_reuse = min(MARKS_REUSE_S, max_staleness / 2)
        self._marks: OrderedDict[Hashable, tuple[float, int, Marks]] = OrderedDict()

    def marks(self, key: Hashable) -> tuple[float, int, Marks] | None:
        """The marks answer of `key` (a query) read less than `marks_reuse` ago, as (read_at,
        as_of_ns, marks), or None. Why an answer may be reused: a reading stored
        `max_staleness` before an answer was stored before that read (the reuse is shorter),
        so its mark is in the signatures the cells are judged by; and cells computed from it
        keep the read's time, so their staleness counts from then."""
        found = self._marks.get(key)
        if found is None or self._clock() - found[0] >= self.marks_reuse:
            return None
        return found

    def put_marks(self, key: Hashable, read_at: float, as_of_ns: int, marks: Marks) -> None:
        """`read_at` (this cache's clock): when the read of `marks` began."""
        if self.marks_reuse <= 0:
            return
        held = self._marks
        held[key] = (read_at, as_of_ns, marks)
        held.move_to_end(key)
        oldest = self._clock() - self.marks_reuse
        while held and (len(held) > MARKS_KEPT or next(iter(held.values()))[0] <= oldest):
            held.popitem(last=False)

    def districts(self, profile: str) -> list[str] | None:
        """The district tags stored for `profile`, if read less than DISTRICTS_FRESH_S ago."""
        kept = self._districts.get(profile)
        if kept is None or self._clock() - kept[0] >= DISTRICTS_FRESH_S:
            return None
        return kept[1]

    def put_districts(self, profile: str, names: list[str], read_at: float) -> None:
        """`read_at` (this cache's clock): when the read of `names` began."""
        self._districts[profile] = (read_at, names)

    def __len__(self) -> int:
        return len(self._kept)

    def now(self) -> float:
        return self._clock()

    def get(self, key: Hashable, signature: Signature) -> Cell | None:
        kept = self._kept.get(key)
        if kept is None:
            return None
        if kept.signature != signature and self._clock() - kept.computed >= self.max_staleness:
            return None
        self._kept.move_to_end(key)
        return kept.cell

    def put(self, key: Hashable, cell: Cell, signature: Signature, read_at: float) -> None:
        """`signature` and `read_at` (this cache's clock): as when the marks were read, before
        the cell was computed, so a write landing meanwhile makes the next request compute it
        again, and the staleness bound counts from then. A cell computed from older marks than
        the one kept does not replace it."""
        kept = self._kept.get(key)
        if kept is not None and kept.computed > read_at:
            return
        self._kept[key] = _Kept(cell, signature, read_at)
        self._kept.move_to_end(key)
        while len(self._kept) > self.max_cells:
            self._kept.popitem(last=False)
