"""Times and durations at the API boundary: RFC 3339 in and out, nanosecond integers inside.

InfluxDB stores nanoseconds and we ask it for `epoch=ns`, so times stay exact integers from the
database to the response; Python's datetime (microseconds) is only used for the calendar part.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

from device_profiles import parse_duration

NS_PER_S = 1_000_000_000

# RFC 3339 date-time (section 5.6): full date, full time, mandatory offset. The space separator
# is accepted because RFC 3339 allows it; a space where the offset should be is a '+' that the
# client forgot to URL-encode, which gets its own hint.
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$"
)
_UNENCODED_PLUS = re.compile(r"\d{2}:\d{2}:\d{2}(?:\.\d+)? \d{2}:\d{2}$")


def parse_rfc3339(text: str) -> int:
    """Nanoseconds since the epoch; raises ValueError saying what is wrong."""
    match = _RFC3339.match(text)
    if match is None:
        hint = (
            " (a '+' in a URL query means a space: encode it as %2B or use Z)"
            if _UNENCODED_PLUS.search(text)
            else ""
        )
        raise ValueError(f"not an RFC 3339 date-time like 2024-05-01T12:00:00Z{hint}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, offset = match.group(7), match.group(8)
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"not a valid date-time: {exc}") from exc
    if offset not in ("Z", "z"):
        sign = 1 if offset[0] == "+" else -1
        moment -= sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
    nanos = int(fraction.ljust(9, "0")) if fraction else 0
    return _epoch_seconds(moment) * NS_PER_S + nanos


def _epoch_seconds(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(seconds=1)


def format_rfc3339(nanos: int) -> str:
    """`2024-05-01T12:00:00.5Z`: UTC, fraction only as long as needed, up to nanoseconds."""
    seconds, fraction = divmod(nanos, NS_PER_S)
    # gmtime and formatting: half the time of datetime.strftime, which every device of a
    # GeoJSON answer pays for (and strftime does not pad years below 1000 to four digits).
    t = time.gmtime(seconds)
    text = f"{t[0]:04d}-{t[1]:02d}-{t[2]:02d}T{t[3]:02d}:{t[4]:02d}:{t[5]:02d}"
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    return text + "Z"


def now_ns() -> int:
    return time.time_ns()


def parse_whole_seconds(text: str, *, minimum: int, maximum: int | None = None) -> int:
    """A duration such as `90s`, `5m`, `1h`, `7d` as whole seconds within [minimum, maximum].

    Whole seconds because the value becomes an InfluxQL duration literal (GROUP BY time() takes
    no bound parameter), and we only ever format integers we computed ourselves into a query.
    """
    seconds = parse_duration(text)
    if seconds != int(seconds):
        raise ValueError(f"duration {text!r} is not a whole number of seconds")
    if seconds < minimum:
        raise ValueError(f"duration {text!r} is shorter than {minimum}s")
    if maximum is not None and seconds > maximum:
        raise ValueError(f"duration {text!r} is longer than {maximum}s")
    return int(seconds)


def bucket_count(start_ns: int, end_ns: int, every_ns: int) -> int:
    """Buckets InfluxDB's GROUP BY time(every) yields for [start, end): they align to the epoch,
    so a window not starting on a boundary touches one more bucket than its length suggests."""
    if end_ns <= start_ns:
        return 0
    return (end_ns - 1) // every_ns - start_ns // every_ns + 1
