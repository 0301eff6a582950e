"""When foresight tries a failed round again: soon (backoff) if InfluxDB could not answer, at the
next interval if it refused."""

from __future__ import annotations

from api.foresight.schedule import RETRY, after_failure
from common.errors import InfluxRejected, InfluxUnavailable

HOUR = 3600.0


def test_a_round_influxdb_could_not_answer_is_tried_again_soon_then_less_often() -> None:
    busy = InfluxUnavailable("ReadTimeout")
    waits = [after_failure(busy, n, HOUR) for n in range(8)]
    assert RETRY.initial / 2 <= waits[0] <= RETRY.initial
    assert all(w <= HOUR for w in waits)
    assert waits[-1] > waits[0] * 8  # doubling, jittered
    assert after_failure(busy, 50, 600.0) == 600.0  # never later than the next round
    assert after_failure(InfluxUnavailable("429", retry_after=900.0), 0, HOUR) >= 900.0


def test_a_round_influxdb_refused_waits_for_the_next_interval() -> None:
    assert after_failure(InfluxRejected("400: bad query"), 0, HOUR) == HOUR
