"""Dead letters' timestamps (ingest.deadletter): strictly rising, so that none overwrites
another, yet following a clock stepped back instead of staying at its old, wrong time."""

from __future__ import annotations

import pytest

from ingest import deadletter
from ingest.deadletter import DeadLetterEncoder
from ingest.stages import Rejected
from wire.lineproto import parse_line
from wire.reasons import Reason

LETTER = Rejected(Reason.MISSING_TIMESTAMP, "no ts", "city/water_pipe/W/telemetry", "water_pipe",
                  "W", b"{}")  # fmt: skip


def _time_of(encoder: DeadLetterEncoder) -> int:
    return parse_line(encoder.encode(LETTER)).time_ns


def test_letters_of_one_nanosecond_get_rising_times(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deadletter.time, "time_ns", lambda: 5_000)
    encoder = DeadLetterEncoder()
    assert [_time_of(encoder) for _ in range(3)] == [5_000, 5_001, 5_002]


def test_a_clock_stepped_back_is_followed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A day ahead at boot, then stepped back by NTP: the letters after the step are stamped
    now, not after the day-ahead ones (`citysense replay` takes letters before now)."""
    day = 86_400 * 10**9
    clock = [100 * day + day]
    monkeypatch.setattr(deadletter.time, "time_ns", lambda: clock[0])
    encoder = DeadLetterEncoder()
    assert _time_of(encoder) == 101 * day
    clock[0] = 100 * day
    assert _time_of(encoder) == 100 * day
    assert _time_of(encoder) == 100 * day + 1
    clock[0] = 100 * day - deadletter.CLOCK_STEP_NS // 2  # a small step back: still rising
    assert _time_of(encoder) == 100 * day + 2
