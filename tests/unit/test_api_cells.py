"""api.cells without InfluxDB: signatures of change marks, and when a kept cell is served."""

from __future__ import annotations

from api.compute.cells import MARKS_KEPT, Cell, CellCache, Marks
from common.influx import Series
from tests.support.clock import Clock
from wire.changes import WINDOW_NS

W = WINDOW_NS


def marks(rows: dict[str, list[tuple[int, int, int]]]) -> Marks:
    return Marks.from_series(
        Series("citysense_changes", {"district": d}, ("time", "s", "n"), tuple(r))
        for d, r in rows.items()
    )


def test_a_signature_covers_the_change_windows_a_span_overlaps() -> None:
    m = marks({"North": [(0, 5, 1), (W, 7, 1), (3 * W, 11, 1)], "South": [(W, 100, 1)]})
    assert m.signature(["North"], 0, W) == (5, 1)
    # A span starting inside a window depends on that window's mark.
    assert m.signature(["North"], W + 1, 2 * W) == (7, 1)
    assert m.signature(["North"], 0, 4 * W) == (23, 3)
    assert m.signature(None, W, 2 * W) == (107, 2)
    assert m.signature(["South", "West"], 2 * W, 3 * W) == (0, 0)


def test_an_overwritten_mark_moves_the_signature() -> None:
    before = marks({"North": [(0, 5, 1), (W, 7, 1)]}).signature(["North"], 0, 2 * W)
    after = marks({"North": [(0, 5, 1), (W, 9, 1)]}).signature(["North"], 0, 2 * W)
    assert before != after


def test_a_cell_is_served_while_its_signature_holds_or_it_is_fresh() -> None:
    clock = Clock()
    cache = CellCache(max_cells=10, max_staleness=30.0, clock=clock)
    cache.put("k", Cell(1.5, 3), (5, 1), clock.now)
    assert cache.get("k", (5, 1)) == Cell(1.5, 3)
    clock.now = 29.0
    assert cache.get("k", (6, 2)) == Cell(1.5, 3)  # changed, but younger than max_staleness
    clock.now = 30.0
    assert cache.get("k", (6, 2)) is None
    assert cache.get("k", (5, 1)) == Cell(1.5, 3)  # unchanged: kept however old
    assert cache.get("other", (5, 1)) is None


def test_no_staleness_means_every_change_is_recomputed() -> None:
    cache = CellCache(max_cells=10, max_staleness=0.0, clock=Clock())
    cache.put("k", Cell(None, 0), (0, 0), 0.0)
    assert cache.get("k", (0, 0)) == Cell(None, 0)
    assert cache.get("k", (1, 1)) is None


def test_the_least_recently_used_cell_goes_first() -> None:
    cache = CellCache(max_cells=2, max_staleness=0.0, clock=Clock())
    cache.put("a", Cell(1, 1), (0, 0), 0.0)
    cache.put("b", Cell(2, 1), (0, 0), 0.0)
    assert cache.get("a", (0, 0)) is not None
    cache.put("c", Cell(3, 1), (0, 0), 0.0)
    assert len(cache) == 2
    assert cache.get("b", (0, 0)) is None
    assert cache.get("a", (0, 0)) == Cell(1, 1)


def test_staleness_counts_from_when_the_marks_were_read() -> None:
    clock = Clock()
    cache = CellCache(max_cells=10, max_staleness=30.0, clock=clock)
    clock.now = 100.0  # the computation took 20 s after its marks were read at 80
    cache.put("k", Cell(1.0, 1), (5, 1), read_at=80.0)
    clock.now = 109.0
    assert cache.get("k", (6, 2)) == Cell(1.0, 1)
    clock.now = 110.0
    assert cache.get("k", (6, 2)) is None


def test_a_slow_older_computation_does_not_replace_a_newer_cell() -> None:
    cache = CellCache(max_cells=10, max_staleness=0.0, clock=Clock())
    cache.put("k", Cell(2.0, 1), (9, 2), read_at=50.0)
    cache.put("k", Cell(1.0, 1), (5, 1), read_at=40.0)  # started earlier, finished later
    assert cache.get("k", (9, 2)) == Cell(2.0, 1)


def test_a_marks_answer_is_reused_only_within_its_reuse_and_keeps_its_read_time() -> None:
    clock = Clock()
    clock.now = 100.0
    cache = CellCache(max_cells=10, max_staleness=30.0, clock=clock)
    assert cache.marks_reuse == 1.0
    m = marks({"North": [(0, 5, 1)]})
    assert cache.marks("q") is None
    cache.put_marks("q", 100.0, 7, m)
    clock.now = 100.9
    assert cache.marks("q") == (100.0, 7, m)  # the read's own times, not the ask's
    assert cache.marks("other") is None
    clock.now = 101.0
    assert cache.marks("q") is None


def test_marks_are_never_reused_without_staleness_and_held_answers_are_bounded() -> None:
    clock = Clock()
    exact = CellCache(max_cells=10, max_staleness=0.0, clock=clock)
    exact.put_marks("q", 0.0, 0, marks({}))
    assert exact.marks("q") is None
    short = CellCache(max_cells=10, max_staleness=0.5, clock=clock)
    assert short.marks_reuse == 0.25  # always below max_staleness
    cache = CellCache(max_cells=10, max_staleness=30.0, clock=clock)
    for n in range(MARKS_KEPT + 5):
        cache.put_marks(n, 0.0, 0, marks({}))
    assert cache.marks(0) is None
    assert cache.marks(MARKS_KEPT + 4) is not None
    assert len(cache._marks) == MARKS_KEPT
    clock.now = 5.0
    cache.put_marks("late", 5.0, 0, marks({}))
    assert list(cache._marks) == ["late"]  # the expired ones let go
