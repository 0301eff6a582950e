"""This host's clock against InfluxDB's, from its answers' Date header (common.influx): what
ingest reports as clock_offset_seconds, for an alert on a host whose clock is off."""

from __future__ import annotations

from email.utils import formatdate

import httpx
import pytest

from common.influx import InfluxClient, InfluxConfig, clock_offset

NOW = 1_796_000_000.25  # a quarter of a second into a second


@pytest.mark.parametrize("into", [0.01, 0.25, 0.99])
def test_a_clock_in_step_reads_within_half_a_second(into: float) -> None:
    """The header truncates to the second: the middle of it is taken (without, a clock in
    step would read up to a second ahead)."""
    now = 1_796_000_000 + into
    offset = clock_offset(formatdate(now, usegmt=True), now)
    assert offset is not None and abs(offset) < 0.5


@pytest.mark.parametrize("hours", [24, -24, 1])
def test_a_clock_off_reads_its_offset(hours: int) -> None:
    offset = clock_offset(formatdate(NOW, usegmt=True), NOW + hours * 3600)
    assert offset == pytest.approx(hours * 3600, abs=0.5)


@pytest.mark.parametrize("date", [None, "", "yesterday", "Fri, 04 Dec 2026 13:00:00"])
def test_no_date_or_one_without_a_zone_says_nothing(date: str | None) -> None:
    assert clock_offset(date, NOW) is None


def test_the_client_keeps_the_offset_of_the_last_answer_that_had_a_date() -> None:
    dates = [formatdate(NOW - 86_400, usegmt=True), None]

    def answer(request: httpx.Request) -> httpx.Response:
        date = dates.pop(0)
        return httpx.Response(204, headers={"Date": date} if date else {})

    with InfluxClient(InfluxConfig(), transport=httpx.MockTransport(answer)) as client:
        assert client.clock_offset is None
        client.write(b"m v=1 1")
        first = client.clock_offset
        assert first is not None and first > 86_000  # InfluxDB's answer a day behind us
        client.write(b"m v=1 1")
        assert client.clock_offset == first
