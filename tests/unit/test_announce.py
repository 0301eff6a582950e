"""Ingest's state-feed announcer (ingest.announce), without a broker: numbered messages, the marks
as stored on the last one, and a batch the feed cannot carry logged, never raised."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from ingest.announce import Announcer
from ingest.changes import change_lines
from wire import statefeed


def _reading(n: int, **fields: Any) -> statefeed.StoredReading:
    return statefeed.StoredReading(
        "streetlight", f"SL-{n}", "North", 1_800_000_000_000_000_000 + n, fields or {"on": True}
    )


def test_messages_are_numbered_across_batches_and_carry_the_marks_as_stored() -> None:
    sent: list[tuple[str, bytes]] = []
    announcer = Announcer(lambda t, p: sent.append((t, p)), "root/_ingested/w1", "w1")
    marks = change_lines({("streetlight", "North", 1_800_000_000_000_000_000 - 100)})
    announcer.announce([_reading(n) for n in range(statefeed.CHUNK + 1)], marks)
    announcer.announce([_reading(1)], [])
    decoded = [statefeed.decode(p) for _, p in sent]
    assert [m.seq for m in decoded] == [0, 1, 2]
    assert {m.publisher for m in decoded} == {announcer.publisher}
    assert announcer.publisher.startswith("w1.")
    [(measurement, district, window, stamp)] = decoded[1].marks  # the batch's last message
    assert (measurement, district) == ("streetlight", "North")
    assert marks[0].endswith(f" stamp={stamp}i {window}")
    assert decoded[0].marks == () and decoded[2].marks == ()
    assert sum(len(m.readings) for m in decoded) == statefeed.CHUNK + 2


def test_a_run_restarted_numbers_from_0_under_another_name() -> None:
    first = Announcer(lambda t, p: None, "t", "w1")
    second = Announcer(lambda t, p: None, "t", "w1")
    assert first.publisher != second.publisher


def test_a_batch_the_feed_cannot_carry_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent: list[bytes] = []
    announcer = Announcer(lambda t, p: sent.append(p), "t", "w1")
    with caplog.at_level(logging.ERROR, logger="ingest.announce"):
        announcer.announce([_reading(1, count=2**70)], [])
    assert sent == []
    assert "could not announce" in caplog.text
    announcer.announce([_reading(2)], [])
    assert orjson.loads(sent[0])["readings"][0]["device_id"] == "SL-2"


def test_a_clean_stop_sends_the_final_number_and_the_will_says_gone() -> None:
    sent: list[tuple[str, bytes]] = []
    announcer = Announcer(lambda t, p: sent.append((t, p)), "root/_ingested/w1", "w1")
    announcer.announce([_reading(1)], [])
    announcer.close()
    first, final = (statefeed.decode(p) for _, p in sent)
    assert (first.seq, first.last) == (0, False)
    assert (final.seq, final.last, final.readings, final.gone) == (1, True, [], False)
    topic, will = announcer.farewell()
    gone = statefeed.decode(will)
    assert topic == "root/_ingested/w1"
    assert (gone.publisher, gone.gone, gone.readings) == (announcer.publisher, True, [])
