"""Dead letters' timestamps (ingest.deadletter): strictly rising, so that none overwrites
another, even when the clock is stepped back."""

from __future__ import annotations

import pytest

from ingest import deadletter, replay
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


def test_a_clock_stepped_back_never_makes_a_letter_overwrite_another(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A day ahead at boot, then stepped back: letters stay after the last one (following the
    clock back, they fell among the times already used, and a letter of the same tags and
    nanosecond overwrote another); the step is logged once. Replay looks a day ahead."""
    day = 86_400 * 10**9
    clock = [101 * day]
    monkeypatch.setattr(deadletter.time, "time_ns", lambda: clock[0])
    encoder = DeadLetterEncoder()
    assert _time_of(encoder) == 101 * day
    clock[0] = 100 * day
    with caplog.at_level("WARNING", logger="ingest.deadletter"):
        assert [_time_of(encoder) for _ in range(3)] == [101 * day + n for n in (1, 2, 3)]
    assert [r.getMessage()[:23] for r in caplog.records] == ["the clock went back 864"]
    assert day <= replay.AHEAD_NS
