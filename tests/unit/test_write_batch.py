"""Batcher and acknowledgement bookkeeping, and the writer's retry and bisection logic, against a
fake InfluxDB."""

from __future__ import annotations

import threading

import httpx
import pytest

from common.errors import InfluxRejected
from common.influx import InfluxClient, InfluxConfig
from common.retry import RetryPolicy
from ingest.acks import Acks, Ticket
from ingest.batch import Batch, Batcher
from ingest.changes import change_lines
from ingest.stats import Stats
from ingest.write import Stopped, Writer
from tests.support.polling import wait_for


def test_batch_cut_by_size_keeps_messages_whole() -> None:
    batcher = Batcher(max_lines=3, max_age=60)
    for mid in range(1, 4):
        batcher.add([f"l{mid}a", f"l{mid}b"], Ticket(mid, 1, mid), 2, 0)
    batch = batcher.take(timeout=0)
    assert batch is not None
    # 2 messages make 4 lines >= 3: a message's lines are never split over two batches
    assert batch.lines == ["l1a", "l1b", "l2a", "l2b"]
    assert [t.mid for t in batch.tickets] == [1, 2]


# A take() whose own timeout is this long returns within a test's deadline only if something
# else ends its wait: the batch's age, or the first message waking it. (How soon: bench.timings.)
HOUR = 3600.0


def taken_in_thread(batcher: Batcher) -> tuple[threading.Thread, list[Batch | None]]:
    """take(timeout=HOUR) in a daemon thread, its result in the list once it returns."""
    taken: list[Batch | None] = []
    thread = threading.Thread(target=lambda: taken.append(batcher.take(timeout=HOUR)), daemon=True)
    thread.start()
    return thread, taken


def test_batch_cut_by_age() -> None:
    batcher = Batcher(max_lines=1000, max_age=0.05)
    batcher.add(["x"], Ticket(1, 1, 1), 1, 0)
    assert batcher.take(timeout=0) is None  # neither full nor old yet
    _, taken = taken_in_thread(batcher)
    wait_for(lambda: taken, 30, what="the batch cut by its age, not by take()'s timeout")
    [batch] = taken
    assert batch is not None
    assert batch.lines == ["x"]


def test_an_idle_writer_wakes_for_the_first_message() -> None:
    """A reading reaching an idle worker waits max_age, not the writer's idle timeout."""
    batcher = Batcher(max_lines=1000, max_age=0.05)
    waiting = threading.Event()
    wait = batcher._cond.wait

    def noted_wait(timeout: float | None = None) -> bool:
        waiting.set()
        return wait(timeout)

    batcher._cond.wait = noted_wait  # type: ignore[method-assign]
    _, taken = taken_in_thread(batcher)
    wait_for(waiting.is_set, 10, what="the writer waiting with nothing buffered")
    assert not taken
    batcher.add(["x"], Ticket(1, 1, 1), 1, 0)
    wait_for(lambda: taken, 30, what="the writer woken by the first message")
    [batch] = taken
    assert batch is not None and batch.lines == ["x"]


def no_ack(mid: int, qos: int) -> None:
    raise AssertionError(f"acknowledged {mid} on taking a delivery")


def test_redelivery_of_held_message_is_skipped_and_acked_once() -> None:
    acks = Acks()
    ticket = acks.take(7, 1, "t", b"a", False, ack=no_ack)
    assert ticket is not None
    assert (
        acks.take(7, 1, "t", b"a", True, ack=no_ack) is None
    )  # the broker resent it after a reconnect
    sent: list[tuple[int, int]] = []
    assert acks.settle([ticket], lambda mid, qos: sent.append((mid, qos))) == 1
    assert sent == [(7, 1)]
    # once acked, the id may be reused by the broker for a new message
    assert acks.take(7, 1, "t", b"a", False, ack=no_ack) is not None


def test_lost_session_voids_old_acks() -> None:
    acks = Acks()
    ticket = acks.take(1, 1, "t", b"a", False, ack=no_ack)
    assert ticket is not None
    acks.new_session()  # the broker forgot us: id 1 now means another message, or nothing
    sent: list[int] = []
    assert acks.settle([ticket], lambda mid, qos: sent.append(mid)) == 0
    assert sent == []
    assert acks.voided == 1


def test_an_id_reused_by_a_broker_that_forgot_never_acks_an_unstored_message() -> None:
    """A broker restarted from a stale save keeps our session but hands the ids we hold to new
    messages: A, B, C held as 1-3, then D, E, F arrive as 1-3 (issue 10, 1)."""
    acks = Acks()
    old = [
        acks.take(m, 1, "t", payload, False, ack=no_ack)
        for m, payload in ((1, b"A"), (2, b"B"), (3, b"C"))
    ]
    acks.connection_lost()  # the broker killed, restarted from a save older than what we hold
    new = [
        acks.take(m, 1, "t", payload, False, ack=no_ack)
        for m, payload in ((1, b"D"), (2, b"E"), (3, b"F"))
    ]
    assert all(t is not None for t in old + new)  # D, E, F are new messages: processed
    sent: list[int] = []
    assert acks.settle([t for t in old if t], lambda mid, qos: sent.append(mid)) == 0
    assert sent == []  # A, B, C's acks would have acknowledged D, E, F before they were stored
    assert acks.settle([t for t in new if t], lambda mid, qos: sent.append(mid)) == 3
    assert sent == [1, 2, 3]
    assert acks.voided == 3


def test_a_new_message_identical_to_a_held_one_is_not_taken_for_its_redelivery() -> None:
    """A lamp saying "on" each minute, stamped with its receive time, on a broker restarted from
    a stale save that gives the held message's id to the next "on": the DUP flag, unset on a
    first send, tells them apart — and the held one's acknowledgement is voided, as for any
    reused id. Sent again (DUP set), the new one is the redelivery."""
    acks = Acks()
    held = acks.take(1, 1, "t", b"on", False, ack=no_ack)
    acks.connection_lost()
    again = acks.take(1, 1, "t", b"on", False, ack=no_ack)
    assert held is not None and again is not None
    assert acks.take(1, 1, "t", b"on", True, ack=no_ack) is None
    sent: list[int] = []
    assert acks.settle([held], lambda mid, qos: sent.append(mid)) == 0
    assert acks.settle([again], lambda mid, qos: sent.append(mid)) == 1
    assert sent == [1] and acks.voided == 1


def test_close_flushes_then_ends() -> None:
    batcher = Batcher(max_lines=100, max_age=60)
    batcher.add(["a"], None, 1, 0)
    batcher.close()
    batch = batcher.take(timeout=1)
    assert batch is not None
    assert batch.lines == ["a"]
    assert batcher.take(timeout=1) is None


class FakeInflux:
    """Answers /write like InfluxDB 1.x would, from a script of statuses; records bodies."""

    def __init__(self, statuses: list[tuple[int, dict[str, str]]], poison: str = "") -> None:
        self.statuses = statuses
        self.poison = poison
        self.bodies: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = request.content.decode()
        self.bodies.append(body)
        if self.statuses:
            status, headers = self.statuses.pop(0)
            return httpx.Response(status, headers=headers, json={"error": "scripted"})
        if self.poison and self.poison in body:
            return httpx.Response(400, json={"error": "field type conflict"})
        return httpx.Response(204)


def make_writer(fake: FakeInflux, stop: threading.Event | None = None) -> tuple[Writer, Stats]:
    client = InfluxClient(InfluxConfig(), transport=httpx.MockTransport(fake))
    stats = Stats()
    return Writer(client, stats, stop or threading.Event(), RetryPolicy.fast()), stats


def test_retryable_errors_are_retried_until_stored() -> None:
    fake = FakeInflux([(503, {}), (429, {"Retry-After": "0"}), (500, {})])
    writer, stats = make_writer(fake)
    assert writer.write(["m v=1 1"]) == []
    assert len(fake.bodies) == 4
    assert stats.write_retries == 3


def test_retry_after_is_honoured() -> None:
    policy = RetryPolicy(initial=0.01, maximum=1.0)
    assert policy.delay(0, retry_after=0.8) >= 0.8
    assert policy.delay(0) <= 0.01


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(initial=0.1, maximum=2.0)
    delays = [policy.delay(n) for n in range(10)]
    assert delays[3] >= 0.4  # 0.1 * 2**3 = 0.8, jittered down to half at most
    assert max(delays) <= 2.0
    # Hours of an outage at the cap: the attempt count passes 1,000, where 2.0**attempt
    # overflows a float; a loop with no deadline (the unspooler) must not die of it.
    assert 1.0 <= policy.delay(5_000) <= 2.0


def test_bad_line_is_isolated_by_bisection() -> None:
    lines = [f"m,n={i} v=1 {i}" for i in range(10)]
    lines[6] = 'm,n=6 v="text" 6'
    fake = FakeInflux([], poison='v="text"')
    writer, _ = make_writer(fake)
    bad = writer.write(lines)
    assert [b.line for b in bad] == [lines[6]]
    stored = {line for body in fake.bodies for line in body.split("\n") if '"text"' not in body}
    assert stored == set(lines) - {lines[6]}  # every good line was written in a clean request


def test_permanent_error_is_never_retried() -> None:
    fake = FakeInflux([], poison="v=")
    writer, stats = make_writer(fake)
    bad = writer.write(["m v=1 1"])
    assert len(bad) == 1
    assert len(fake.bodies) == 1
    assert stats.write_retries == 0


def test_stop_interrupts_retrying() -> None:
    stop = threading.Event()
    fake = FakeInflux([(503, {})] * 1000)
    writer, _ = make_writer(fake, stop)
    threading.Timer(0.2, stop.set).start()
    with pytest.raises(Stopped):
        writer.write(["m v=1 1"])


def test_rejected_status_tree() -> None:
    fake = FakeInflux([(404, {})])
    client = InfluxClient(InfluxConfig(), transport=httpx.MockTransport(fake))
    with pytest.raises(InfluxRejected) as info:
        client.query("SHOW DATABASES")
    assert info.value.status == 404


def test_marks_follow_their_readings_with_a_fresh_stamp_per_attempt() -> None:
    # Marks go in a request of their own after the readings are stored (a reader must not see a
    # mark before its readings), and a retry after a timeout that InfluxDB did apply must not
    # put back a stamp a reader may have seen before another writer's mark replaced it.
    fake = FakeInflux([(204, {}), (503, {}), (503, {})])
    writer, _ = make_writer(fake)
    data = ["water_pipe,device_id=D,district=N pressure=1.0 5"]
    marks = change_lines({("water_pipe", "N", 0), ("water_pipe", "S", 0)})
    assert writer.write(data + marks) == []
    assert fake.bodies[0] == data[0]
    stamps = []
    for body in fake.bodies[1:]:
        lines = body.splitlines()
        assert [m.rsplit(" ", 2)[::2] for m in lines] == [m.rsplit(" ", 2)[::2] for m in marks]
        stamps.append({m.rsplit(" ", 2)[1] for m in lines})
    assert len(stamps) == 3
    assert all(len(s) == 1 for s in stamps)
    assert len(set.union(*stamps)) == 3


def test_a_missing_policy_of_readings_is_held_not_given_up() -> None:
    """InfluxDB 1.x's 500 for a policy it lacks is an operator's fix, as a missing database: the
    readings are retried past the spool's deadline (a spool would not drain either), not given
    up to it; the rows of a write are dropped instead (tests/unit/test_latest_rows.py)."""
    answers = [500, 500, 204]
    bodies: list[bytes] = []

    def influx(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        status = answers.pop(0)
        if status == 500:
            return httpx.Response(500, json={"error": "retention policy not found: autogen"})
        return httpx.Response(status)

    client = InfluxClient(InfluxConfig(), transport=httpx.MockTransport(influx))
    writer = Writer(client, Stats(), threading.Event(), RetryPolicy.fast())
    assert writer.write(["m v=1 1"], deadline=0.0) == []  # a deadline long past
    assert len(bodies) == 3


def test_influxdb_2s_422_is_a_refusal_of_some_lines_found_and_given_up_not_retried() -> None:
    """InfluxDB 2.x answers a write some of whose lines it rejects (a field-type conflict) with
    422 and {"code", "message"}, storing the others: the refused line is found by halving and
    returned, as for 1.x's 400, not retried for ever as a refusal of the request."""
    stored: list[str] = []
    stop = threading.Event()  # set once retries pass any halving: Stopped, not a hung test

    def influx(request: httpx.Request) -> httpx.Response:
        if len(stored) > 100:
            stop.set()
        lines = request.content.decode().split("\n")
        good = [text for text in lines if 'v="' not in text]
        stored.extend(good)
        if len(good) < len(lines):
            message = (
                "failure writing points to database: partial write: field type conflict: "
                f'input field "v" on measurement "m" is type string, already exists as type '
                f"float dropped={len(lines) - len(good)}"
            )
            return httpx.Response(422, json={"code": "unprocessable entity", "message": message})
        return httpx.Response(204)

    client = InfluxClient(InfluxConfig(), transport=httpx.MockTransport(influx))
    writer = Writer(client, Stats(), stop, RetryPolicy.fast())
    lines = [f"m,n={n} v={n} {n}" for n in range(9)]
    lines[5] = 'm,n=5 v="five" 5'
    bad = writer.write(lines, deadline=0.0)
    assert [b.line for b in bad] == [lines[5]]
    assert bad[0].error.startswith("InfluxDB partial write: ")
    assert "field type conflict" in bad[0].error
    assert set(stored) == set(lines) - {lines[5]}


def test_a_delivery_stored_after_its_connection_was_lost_is_acked_only_once_delivered_again() -> (
    None
):
    """The broker, if it kept the delivery, sends it again as the session resumes: then, and
    not before, is it acknowledged. Stored first or delivered again first, one ack either way;
    nothing counts as held once stored."""
    acks = Acks()
    sent: list[int] = []
    first, second = (acks.take(m, 1, "t", p, False, ack=no_ack) for m, p in ((1, b"A"), (2, b"B")))
    assert first is not None and second is not None
    acks.connection_lost()
    assert acks.settle([first], lambda mid, qos: sent.append(mid)) == 0
    assert sent == [] and len(acks) == 1 and acks.stored_unconfirmed == 1
    assert acks.take(1, 1, "t", b"A", True, ack=lambda mid, qos: sent.append(mid)) is None
    assert sent == [1] and acks.stored_unconfirmed == 0
    # Delivered again before it is stored: acknowledged when stored, on this connection.
    assert acks.take(2, 1, "t", b"B", True, ack=no_ack) is None
    assert acks.settle([second], lambda mid, qos: sent.append(mid)) == 1
    assert sent == [1, 2] and len(acks) == 0 and acks.voided == 0


def test_a_held_id_given_to_a_new_message_after_a_lost_connection_is_never_acked_for_the_old() -> (
    None
):
    """The broker restarted from a stale save gives the held id 7 to a new message, already on
    its way while the held one is stored: acknowledging 7 then acknowledged the new message
    before it was read (lost if the worker stopped before storing it). The held one's
    acknowledgement waits instead, and the new message's take voids it."""
    acks, sent = _stored_on_a_lost_connection(7, b"old")
    new = acks.take(7, 1, "t", b"new", False, ack=no_ack)
    assert new is not None and sent == [] and acks.voided == 1 and acks.stored_unconfirmed == 0
    assert acks.settle([new], lambda mid, qos: sent.append(mid)) == 1
    assert sent == [7] and len(acks) == 0


def test_acknowledgements_are_sent_before_a_lost_connection_can_be_counted() -> None:
    """`then` (the send) runs under the lock that counts lost connections: a connection lost
    while a stored batch's acks are being sent is counted only once they are out, so an ack
    decided on one connection never goes out on the next."""
    acks = Acks()
    ticket = acks.take(3, 1, "t", b"x", False, ack=no_ack)
    assert ticket is not None
    sending, release = threading.Event(), threading.Event()
    events: list[str] = []

    def send() -> None:
        sending.set()
        release.wait(10)
        events.append("sent")

    writer = threading.Thread(target=acks.settle, args=([ticket], lambda m, q: None, send))
    writer.start()
    assert sending.wait(10)
    lost = threading.Thread(target=lambda: (acks.connection_lost(), events.append("lost")))
    lost.start()
    lost.join(0.3)
    assert lost.is_alive() and events == []  # waits for the send in progress
    release.set()
    writer.join(10)
    lost.join(10)
    assert events == ["sent", "lost"]


def _stored_on_a_lost_connection(mid: int, payload: bytes) -> tuple[Acks, list[int]]:
    """Acks holding `mid`, taken on a connection since lost and stored: its acknowledgement
    waiting (none sent: the list of those sent is returned, empty)."""
    acks = Acks()
    sent: list[int] = []
    held = acks.take(mid, 1, "t", payload, False, ack=no_ack)
    assert held is not None
    acks.connection_lost()
    assert acks.settle([held], lambda m, qos: sent.append(m)) == 0
    return acks, sent


def test_draining_acknowledges_a_stored_delivery_sent_again_and_takes_nothing_new() -> None:
    """Stopping, nothing new is taken; but a delivery held, stored on an earlier connection and
    sent again now is acknowledged (else unacknowledged at exit: stored again by the next)."""
    acks, sent = _stored_on_a_lost_connection(5, b"x")
    assert not acks.again(6, "t", b"y", True, qos=1, ack=no_ack)  # new: not taken
    assert not acks.again(5, "t", b"other", True, qos=1, ack=no_ack)  # another message
    assert acks.again(5, "t", b"x", True, qos=1, ack=lambda mid, qos: sent.append(mid))
    assert sent == [5] and len(acks) == 0 and acks.stored_unconfirmed == 0


def test_a_qos_2_delivery_is_completed_whatever_the_connection() -> None:
    """After a reconnect the broker sends a QoS 2 delivery's PUBREL again, not the message:
    nothing would come to wait for, and the PUBCOMP answers that PUBREL."""
    acks = Acks()
    sent: list[tuple[int, int]] = []
    ticket = acks.take(9, 2, "t", b"x", False, ack=no_ack)
    assert ticket is not None
    acks.connection_lost()
    assert acks.settle([ticket], lambda mid, qos: sent.append((mid, qos))) == 1
    assert sent == [(9, 2)]
