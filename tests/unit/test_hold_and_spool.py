"""What a worker holds and keeps: the byte budget, spool framing that survives any byte and sets
damaged segments aside, and requests kept under InfluxDB's body limit (issue 10: 3, 4, 6)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import SpoolInUse
from common.influx import InfluxClient, InfluxConfig
from common.retry import RetryPolicy
from ingest import spool as spool_module
from ingest.budget import Budget, weight_of
from ingest.spool import CORRUPT, LOCK, CorruptSegment, Spool, frame, unframe
from ingest.stats import Stats
from ingest.write import Writer
from tests.support.polling import wait_for

# --- spool -------------------------------------------------------------------------------------


@given(st.lists(st.text(max_size=50), max_size=20))
def test_any_text_reads_back_exactly(lines: list[str]) -> None:
    assert unframe(frame(lines)) == lines


def test_line_separators_inside_a_record_stay_inside_it(tmp_path: Path) -> None:
    # str.splitlines() splits on these; a dead letter's payload carries them raw.
    lines = ['dead_letters payload="a\u2028b\u2029c\x85d" 1', "m v=1 2"]
    spool = Spool(tmp_path, 1 << 20)
    assert spool.append(lines)
    [segment] = spool.segments()
    assert spool.read(segment) == lines


def test_a_second_spool_of_one_folder_is_refused_and_touches_nothing_until_the_first_lets_go(
    tmp_path: Path,
) -> None:
    """Two workers under one client id (a copied configuration): the second would delete the
    first's half-written segment as stale and drain its segments with it."""
    first = Spool(tmp_path, 1 << 20)
    assert first.append(["m v=1 1"])
    writing = tmp_path / "00000000000000000009-000000.tmp"  # the first's, being written
    writing.write_bytes(b"half")
    with pytest.raises(SpoolInUse, match=rf"pid {os.getpid()}\).*CITYSENSE_CLIENT_ID"):
        Spool(tmp_path, 1 << 20)
    assert writing.exists() and len(first.segments()) == 1
    first.close()
    again = Spool(tmp_path, 1 << 20)  # a restart: the folder is its now, stale files gone
    assert not writing.exists() and again.bytes_used == first.bytes_used
    again.close()


def test_a_folder_that_cannot_be_locked_still_spools_said_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_locks(_fd: int, _how: int) -> None:
        raise OSError(37, "injected: no locks available")  # ENOLCK: a FUSE or CIFS mount

    monkeypatch.setattr(spool_module.fcntl, "flock", no_locks)
    spool = Spool(tmp_path, 1 << 20)
    assert spool.append(["m v=1 1"]) and len(spool.segments()) == 1
    assert "cannot be locked" in caplog.text
    spool.close()


def test_a_damaged_segment_is_set_aside_and_the_rest_still_read(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    assert spool.append(["m v=1 1"])
    assert spool.append(["m v=2 2"])
    first, second = spool.segments()
    first.write_bytes(first.read_bytes()[:-1] + b"\xff")  # one flipped byte
    try:
        spool.read(first)
    except CorruptSegment as exc:
        moved = spool.quarantine(first, str(exc))
    else:
        raise AssertionError("a damaged segment was read as if whole")
    assert moved.parent.name == CORRUPT and moved.exists()  # kept for the operator
    assert spool.segments() == [second]
    assert spool.read(second) == ["m v=2 2"]
    assert spool.corrupt == 1
    assert spool.bytes_used == second.stat().st_size


def test_a_cut_segment_and_invalid_utf8_are_recognised(tmp_path: Path) -> None:
    for data in (frame(["m v=1 1"])[:-3], frame(["x"])[:8] + b"\xff"):
        try:
            unframe(data)
        except CorruptSegment:
            continue
        raise AssertionError(f"{data!r} read as if whole")


def test_segments_of_the_older_newline_format_still_drain(tmp_path: Path) -> None:
    (tmp_path / "00000000000000000001-000000.lp").write_text("m v=1 1\nm v=2 2\n")
    spool = Spool(tmp_path, 1 << 20)
    [segment] = spool.segments()
    assert spool.read(segment) == ["m v=1 1", "m v=2 2"]


def test_a_disk_that_refuses_a_write_refuses_the_batch_not_the_thread(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "gone", 1 << 20)
    (tmp_path / "gone" / LOCK).unlink()
    (tmp_path / "gone").rmdir()  # as a full or vanished disk would make the write fail
    assert spool.append(["m v=1 1"]) is False
    assert spool.refused == 1
    assert spool.bytes_used == 0


# --- budget ------------------------------------------------------------------------------------


def test_a_folder_that_cannot_be_made_durable_leaves_no_segment_and_no_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The segment renamed, then the folder's fsync failing (a failing disk): the batch is held
    # instead, so no segment may stay to be drained again and counted off bytes never counted.
    spool = Spool(tmp_path, 1 << 20)

    def fail() -> None:
        raise OSError(5, "injected: I/O error")

    monkeypatch.setattr(spool, "_fsync_folder", fail)
    assert not spool.append(["m v=1 1"])
    assert spool.segments() == [] and spool.bytes_used == 0
    assert [p.name for p in tmp_path.iterdir()] == [LOCK]
    monkeypatch.undo()
    assert spool.append(["m v=2 2"])
    assert spool.bytes_used == sum(p.stat().st_size for p in spool.segments())


def test_the_budget_waits_for_room_and_lets_one_heavy_message_through() -> None:
    budget = Budget(1000)
    never = threading.Event()
    assert budget.acquire(5000, never)  # alone, heavier than the budget: let through
    acquired: list[bool] = []

    def second() -> None:
        acquired.append(budget.acquire(10, never))

    thread = threading.Thread(target=second, daemon=True)
    thread.start()
    wait_for(lambda: budget.waits == 1, 5, what="the second acquire waiting")
    assert thread.is_alive() and not acquired  # no room while the heavy one is held
    assert budget.held == 5000
    budget.release(5000)
    thread.join(5)
    assert acquired == [True] and budget.held == 10
    assert budget.waits == 1


def test_a_drain_stops_the_wait() -> None:
    budget = Budget(100)
    stop = threading.Event()
    assert budget.acquire(100, stop)
    threading.Timer(0.1, stop.set).start()
    assert budget.acquire(1, stop) is False
    assert budget.held == 100


def test_a_waiting_acquire_calls_waiting_without_the_lock_and_a_fitting_one_never() -> None:
    """The MQTT thread keeps its connection while it waits (ingest.consume.keep_alive): the
    callback runs while the budget is spent, outside the lock, so the writer can release."""
    budget = Budget(100)
    stop = threading.Event()
    calls: list[int] = []
    assert budget.acquire(60, stop, lambda: calls.append(1))
    assert calls == []  # room: no wait, no call

    def release_from_the_callback() -> None:
        calls.append(1)
        if len(calls) == 3:
            budget.release(60)  # would deadlock if the lock were held here

    assert budget.acquire(50, stop, release_from_the_callback)
    assert len(calls) == 3 and budget.held == 50


def test_weight_counts_lines_and_readings() -> None:
    lines = ["x" * 100] * 10
    assert weight_of(50, lines, 10) > 50 + 1000


# --- requests under InfluxDB's body limit ------------------------------------------------------


class TooLarge:
    """InfluxDB with a small max-body-size: 413 for larger bodies, 204 otherwise."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sizes: list[int] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sizes.append(len(request.content))
        if len(request.content) > self.limit:
            return httpx.Response(413, json={"error": "Request Entity Too Large"})
        return httpx.Response(204)


def _writer(fake: TooLarge, max_request_bytes: int) -> Writer:
    client = InfluxClient(InfluxConfig(), transport=httpx.MockTransport(fake))
    return Writer(client, Stats(), threading.Event(), RetryPolicy.fast(), max_request_bytes)


def test_requests_are_cut_under_the_request_limit() -> None:
    fake = TooLarge(10_000)
    lines = [f"m,n={i} v={'x' * 90}i {i}" for i in range(1000)]
    assert _writer(fake, 8_000).write(lines) == []
    assert max(fake.sizes) <= 8_000
    assert len(fake.sizes) > 10


def test_a_413_is_split_not_retried_forever_and_a_line_too_large_alone_is_refused() -> None:
    fake = TooLarge(1_000)
    lines = [f"m,n={i} v=1i {i}" for i in range(200)] + ['m,n=big v="' + "x" * 2000 + '" 1']
    bad = _writer(fake, 1 << 20).write(lines)
    assert [b.line for b in bad] == [lines[-1]]
    assert "413" in bad[0].error
