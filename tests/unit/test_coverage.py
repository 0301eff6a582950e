"""What the state feed vouches for (api.live.coverage), without servers: which parts a catch-up
must query again, when trust is lost and when it comes back."""

from __future__ import annotations

from api.live.coverage import Coverage, Marks
from wire.changes import STAMP_BITS, identity, split
from wire.statefeed import Message

SL, WP = "streetlight", "water_pipe"


def _message(publisher: str | None, seq: int, *marks: tuple[str, str, int, int]) -> Message:
    return Message([], publisher, seq, marks)


def _trusted(synced: Marks) -> Coverage:
    coverage = Coverage()
    coverage.merged(synced, coverage.begin())
    assert coverage.trusted
    return coverage


def test_untrusted_parts_whose_marks_moved_from_their_earliest_moved_window() -> None:
    old: Marks = {
        (SL, "North"): {100: 1, 200: 2, 300: 3},
        (SL, "South"): {100: 1},
        (WP, "North"): {100: 1},
    }
    new: Marks = {
        (SL, "North"): {200: 2, 300: 9, 400: 4},  # 100 expired; 300 rewritten
        (SL, "South"): {100: 1},  # unchanged
        (WP, "North"): {50: 7, 100: 1},  # a late write into an older window
        (WP, "South"): {400: 1},  # a part first written since
    }
    coverage = Coverage(synced=old)
    assert not coverage.trusted
    assert coverage.moved(new, since=0) == {
        (SL, "North"): 300,
        (WP, "North"): 50,
        (WP, "South"): 400,
    }
    # Windows before the lookback are not asked about.
    assert coverage.moved(new, since=60) == {(SL, "North"): 300, (WP, "South"): 400}


def test_marks_the_feed_brought_need_no_query_the_others_do() -> None:
    coverage = _trusted({(SL, "North"): {100: 1}})
    coverage.take(_message("ingest-1.a", 0, (SL, "North", 100, 5), (SL, "North", 200, 6)))
    current: Marks = {
        (SL, "North"): {100: 5, 200: 6},  # both announced
        (SL, "South"): {200: 8},  # written by a replay: never announced
    }
    assert coverage.moved(current, since=0) == {(SL, "South"): 200}
    # A later write the feed has not brought yet moves its part.
    current[(SL, "North")][200] = 7
    assert coverage.moved(current, since=0) == {(SL, "North"): 200, (SL, "South"): 200}


def test_a_gap_in_a_publishers_numbers_withdraws_what_the_feed_vouched_for() -> None:
    coverage = _trusted({(SL, "North"): {100: 1}})
    coverage.take(_message("ingest-1.a", 0, (SL, "North", 100, 5)))
    coverage.take(_message("ingest-1.a", 2, (SL, "North", 100, 6)))  # 1 was lost
    assert not coverage.trusted and coverage.losses == 1
    # Message 1 may have written anywhere since the last catch-up: every moved part is asked.
    assert coverage.moved({(SL, "North"): {100: 6}}, since=0) == {(SL, "North"): 100}


def test_a_publisher_first_heard_past_its_first_message_is_a_loss_from_0_it_is_not() -> None:
    coverage = _trusted({})
    coverage.take(_message("ingest-2.b", 0))
    assert coverage.trusted
    coverage.take(_message("ingest-3.c", 4))
    assert not coverage.trusted


def test_trust_returns_only_with_a_catch_up_begun_after_the_loss() -> None:
    coverage = _trusted({})
    before = coverage.begin()
    coverage.lost("a message dropped")
    coverage.merged({(SL, "North"): {100: 1}}, before)  # its marks were read before the loss
    assert not coverage.trusted
    after = coverage.begin()
    coverage.merged({(SL, "North"): {100: 2}}, after)
    assert coverage.trusted
    assert coverage.moved({(SL, "North"): {100: 2}}, since=0) == {}


def test_a_catch_up_forgets_stamps_from_before_it_and_keeps_those_after() -> None:
    coverage = _trusted({})
    coverage.take(_message("p.1", 0, (SL, "North", 100, 5)))
    token = coverage.begin()
    coverage.take(_message("p.1", 1, (SL, "North", 200, 6)))  # while the catch-up runs
    coverage.merged({(SL, "North"): {100: 5}}, token)
    assert coverage.dump()["seen"] == [[SL, "North", 200, 6]]
    assert coverage.moved({(SL, "North"): {100: 5, 200: 6}}, since=0) == {}


def test_messages_of_an_older_ingest_vouch_for_nothing_and_lose_nothing() -> None:
    coverage = _trusted({})
    coverage.take(Message([]))
    assert coverage.trusted and coverage.losses == 0
    assert coverage.moved({(SL, "North"): {100: 1}}, since=0) == {(SL, "North"): 100}


def test_bounds_drop_trust_rather_than_grow() -> None:
    coverage = Coverage(max_seen=2)
    coverage.merged({}, coverage.begin())
    coverage.take(_message("p.1", 0, (SL, "N", 1, 1), (SL, "N", 2, 2)))
    assert coverage.trusted
    coverage.take(_message("p.1", 1, (SL, "N", 3, 3)))
    assert not coverage.trusted and coverage.dump()["seen"] == []

    publishers = Coverage(max_publishers=2)
    publishers.merged({}, publishers.begin())
    for name in ("a", "b", "c"):  # "a", heard least recently, is forgotten
        publishers.take(_message(name, 0))
    assert publishers.trusted
    publishers.take(_message("a", 1))
    assert not publishers.trusted


def test_what_a_snapshot_holds_comes_back_and_anything_odd_restores_no_trust() -> None:
    coverage = _trusted({(SL, "North"): {100: 1}})
    coverage.take(_message("p.1", 0, (SL, "North", 200, 6)))
    again = Coverage()
    again.load(coverage.synced, coverage.dump())
    assert again.trusted
    assert again.moved({(SL, "North"): {100: 1, 200: 6}}, since=0) == {}
    again.take(_message("p.1", 1))  # numbering goes on from the snapshot's
    assert again.trusted
    for odd in (None, "x", {"seen": 3}, {"trusted": "yes", "seen": [], "publishers": []}):
        fresh = Coverage()
        fresh.load({}, odd)
        assert not fresh.trusted


def test_a_message_held_already_is_skipped_not_a_loss() -> None:
    """Numbers at or below the last taken: a peer's state held them (api.live.peer), or the
    broker sent one twice. Neither is a gap; the next number after the highest is expected."""
    coverage = _trusted({})
    coverage.take(_message("ingest-a", 0, (SL, "North", 100, 1)))
    coverage.take(_message("ingest-a", 1, (SL, "North", 200, 2)))
    coverage.take(_message("ingest-a", 0, (SL, "North", 100, 5)))  # again: vouches nothing
    assert coverage.trusted and coverage.losses == 0
    assert coverage.moved({(SL, "North"): {100: 5}}, since=0) == {(SL, "North"): 100}
    coverage.take(_message("ingest-a", 2))
    assert coverage.trusted  # 2 follows 1, not the 0 taken again
    coverage.take(_message("ingest-a", 4))
    assert not coverage.trusted and coverage.losses == 1  # 3 is missing


def test_a_final_message_forgets_its_publisher_and_a_will_is_a_loss() -> None:
    coverage = _trusted({})
    coverage.take(_message("ingest-a", 0))
    coverage.take(Message([], "ingest-a", 1, (), last=True))
    assert coverage.trusted and coverage.dump()["publishers"] == []
    # A final number after a lost message is still a gap.
    coverage.take(_message("ingest-b", 0))
    coverage.take(Message([], "ingest-b", 2, (), last=True))
    assert not coverage.trusted and coverage.losses == 1
    assert coverage.dump()["publishers"] == []
    # A will: the publisher went away with no final number; what it sent last may be lost.
    coverage = _trusted({})
    coverage.take(_message("ingest-c", 0))
    coverage.take(Message([], "ingest-c", -1, gone=True))
    assert not coverage.trusted and coverage.losses == 1
    assert coverage.dump()["publishers"] == []


def test_a_quiet_stamp_no_read_saw_moves_its_part_whatever_the_feed_brought_after() -> None:
    """Replay writes window 100 (quiet: stamp 8, quiet 8), then ingest writes it again and
    announces stamp 5: the mark now reads (5, quiet 8). The feed brought 5, but not the replay's
    readings: the part is queried. Once a catch-up read it, later announced stamps need none."""
    coverage = _trusted({(SL, "North"): {100: 1}})
    coverage.take(_message("ingest-1.a", 0, (SL, "North", 100, 5)))
    current: Marks = {(SL, "North"): {100: identity(5, 8)}}
    assert coverage.moved(current, since=0) == {(SL, "North"): 100}
    coverage.merged(current, coverage.begin())  # the catch-up read it
    assert coverage.moved(current, since=0) == {}
    coverage.take(_message("ingest-1.a", 1, (SL, "North", 100, 6)))
    assert coverage.moved({(SL, "North"): {100: identity(6, 8)}}, since=0) == {}
    # Another quiet write since (a new quiet stamp): queried again.
    assert coverage.moved({(SL, "North"): {100: identity(6, 9)}}, since=0) == {(SL, "North"): 100}


def test_a_marks_identity_holds_both_stamps_and_equals_no_plain_stamp() -> None:
    top = (1 << STAMP_BITS) - 1
    for stamp, quiet in ((0, 0), (5, 8), (top, top), (top, 0), (0, top)):
        folded = identity(stamp, quiet)
        assert folded < 0 and split(folded) == (stamp, quiet)
    assert identity(7, None) == 7 and split(7) == (7, None)
