"""Query parameters that only the API can judge (times, windows, contract names), checked once
here; a refusal is an InvalidParameter (a 422 shaped like FastAPI's own validation errors)."""

from __future__ import annotations

from collections.abc import Sequence

from api.core.errors import invalid_query
from api.core.query import Aggregate
from api.core.times import NS_PER_S, bucket_count, now_ns, parse_rfc3339, parse_whole_seconds
from api.core.windows import (
    Calendar,
    Window,
    calendar_windows,
    count_calendar_windows,
    fixed_windows,
    zone,
)
from device_profiles import FieldSpec, Profile

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


def field_spec(profile: Profile, field: str, agg: Aggregate) -> FieldSpec:
    """The field of `profile` named `field`, if `agg` applies to it."""
    spec = profile.fields.get(field)
    if spec is None:
        fields = sorted(profile.fields)
        raise invalid_query(
            "field",
            field,
            f"{field!r} is not a field of {profile.profile!r}; its fields: {', '.join(fields)}",
            allowed=fields,
        )
    problem = agg.problem(spec)
    if problem is not None:
        raise invalid_query("agg", agg.value, f"{problem} ({field!r})")
    return spec


CALENDAR_MAX = 1000  # one InfluxQL statement per calendar window


def window_list(
    every: str, tz: str, start_ns: int, end_ns: int, max_points: int
) -> tuple[list[Window], int | None]:
    """The windows of the request and, for a fixed width, that width in seconds."""
    try:
        zone_info = zone(tz)
    except ValueError as exc:
        raise invalid_query("tz", tz, str(exc)) from exc
    if every in Calendar.__members__.values():
        unit = Calendar(every)
        if count_calendar_windows(start_ns, end_ns, unit) > CALENDAR_MAX + 2:
            raise invalid_query(
                "every", every, f"more than {CALENDAR_MAX} {every} windows: narrow the window"
            )
        windows = calendar_windows(start_ns, end_ns, unit, zone_info)
        if len(windows) > CALENDAR_MAX:
            raise invalid_query(
                "every", every, f"more than {CALENDAR_MAX} {every} windows: narrow the window"
            )
        return windows, None
    try:
        every_s = parse_whole_seconds(every, minimum=1)
    except ValueError as exc:
        raise invalid_query("every", every, f"{exc}, or one of hour, day, week, month") from exc
    points = bucket_count(start_ns, end_ns, every_s * NS_PER_S)
    if points > max_points:
        raise invalid_query(
            "every",
            every,
            f"{points} buckets of {every_s}s between start and end exceed the maximum of "
            f"{max_points}: widen every or narrow the window",
            max_points=max_points,
        )
    return fixed_windows(start_ns, end_ns, every_s * NS_PER_S), every_s
