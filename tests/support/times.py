"""Time as the tests write it: nanosecond units, RFC 3339 text as the API answers, and
yesterday's midnight (UTC) for data on a fixed daily grid."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

S = 1_000_000_000
MIN = 60 * S
HOUR = 60 * MIN


def rfc3339(nanos: int) -> str:
    seconds, fraction = divmod(nanos, S)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{fraction:09d}".rstrip("0") if fraction else "") + "Z"


def yesterday() -> int:
    """Yesterday's midnight, UTC, in ns."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return int((today - timedelta(days=1)).timestamp()) * S
