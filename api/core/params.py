"""Query parameters that only the API can judge (times, windows, contract names), checked once
here and turned into 422s shaped like FastAPI's own validation errors."""

from __future__ import annotations

from collections.abc import Sequence

from api.core.times import NS_PER_S, now_ns, parse_rfc3339
from api.errors import invalid_query

DAY_S = 86400


def time_param(name: str, text: str) -> int:
    try:
        return parse_rfc3339(text)
    except ValueError as exc:
        raise invalid_query(name, text, str(exc)) from exc


# Offsets past any list the API serves: bounded so that an answer echoing one stays a 64-bit
# integer in JSON (an unbounded one answered 500).
OFFSET_MAX = 10_000_000


def time_window(start: str | None, end: str | None, *, default_s: int = DAY_S) -> tuple[int, int]:
    """[start, end) in ns: end defaults to now, start to `default_s` before end."""
    end_ns = time_param("end", end) if end is not None else now_ns()
    start_ns = time_param("start", start) if start is not None else end_ns - default_s * NS_PER_S
    if end_ns <= start_ns:
        raise invalid_query("end", end, "end must be after start")
    return start_ns, end_ns


def check_choice(name: str, value: str | None, allowed: Sequence[str]) -> None:
    if value is not None and value not in allowed:
        raise invalid_query(
            name, value, f"unknown {name} {value!r}; allowed: {', '.join(allowed)}", allowed=allowed
        )
