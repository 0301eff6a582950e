"""The InfluxQL foresight runs and serves, under api.core.query's rules: identifiers come from the
contract or this module and are quoted, every value is a bound parameter, and the GROUP BY
time() interval is formatted from an int we chose."""

# S608 flags every f-string that looks like SQL; each one here follows the rules above.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Mapping, Sequence

from api.core.query import DEVICE_TAG, DISTRICT_TAG, Query
from api.core.series_split import WHOLE, Piece
from common.influx import ParamValue, quote_ident
from device_profiles import Profile
from wire.deadletters import MEASUREMENT as DEAD_LETTERS
from wire.retention import qualified

SIGNALS, FORECASTS, FORECAST_ERRORS, QUALITY = "signals", "forecasts", "forecast_errors", "quality"
HOUR_S = 3600


def _piece(piece: Piece, params: dict[str, ParamValue]) -> str:
    """The conditions on device ids of a piece of a district (api.core.series_split)."""
    ids, others = piece
    text = ""
    if ids is not None:
        text += f" AND {DEVICE_TAG} =~ $ids"
        params["ids"] = ids
    if others is not None:
        text += f" AND {DEVICE_TAG} !~ $other_ids"
        params["other_ids"] = others
    return text


def readings(
    profile: Profile,
    fields: Sequence[str],
    district: str,
    start_ns: int,
    end_ns: int,
    *,
    piece: Piece = WHOLE,
) -> Query:
    """The given fields of every reading of a district (or a piece of it) in [start, end), one
    series per device."""
    unknown = [f for f in fields if f not in profile.fields]
    if unknown or not fields:
        raise ValueError(f"not fields of {profile.profile!r}: {unknown or 'none given'}")
    select = ", ".join(quote_ident(f) for f in fields)
    params: dict[str, ParamValue] = {"district": district, "start": start_ns, "end": end_ns}
    return Query(
        f"SELECT {select} FROM {quote_ident(profile.measurement)} "
        f"WHERE {DISTRICT_TAG} = $district AND time >= $start AND time < $end"
        f"{_piece(piece, params)} GROUP BY {DEVICE_TAG}",
        params,
    )


def dead_letters(profile: str, start_ns: int, end_ns: int) -> Query:
    """Device and reason of each dead letter of a profile received in [start, end)."""
    return Query(
        f"SELECT {DEVICE_TAG}, {quote_ident('reason')} FROM {qualified(DEAD_LETTERS)} "
        f"WHERE {quote_ident('profile')} = $profile AND time >= $start AND time < $end",
        {"profile": profile, "start": start_ns, "end": end_ns},
    )


def hourly_means(
    profile: Profile,
    field: str,
    district: str,
    start_ns: int,
    end_ns: int,
    *,
    piece: Piece = WHOLE,
) -> Query:
    """Each device's mean of `field` per hour of [start, end) in a district (or a piece of it)."""
    if field not in profile.fields:
        raise ValueError(f"{field!r} is not a field of {profile.profile!r}")
    params: dict[str, ParamValue] = {"district": district, "start": start_ns, "end": end_ns}
    return Query(
        f"SELECT mean({quote_ident(field)}) AS {quote_ident('v')} "
        f"FROM {quote_ident(profile.measurement)} "
        f"WHERE {DISTRICT_TAG} = $district AND time >= $start AND time < $end"
        f"{_piece(piece, params)} GROUP BY time({HOUR_S:d}s), {DEVICE_TAG} fill(none)",
        params,
    )


def stored(
    measurement: str, start_ns: int, end_ns: int, tags: Mapping[str, Sequence[str]], limit: int
) -> Query:
    """Points of one of foresight's own measurements in [start, end), each tag restricted to the
    given values (any of them), newest first, at most `limit`."""
    if measurement not in (SIGNALS, FORECASTS, FORECAST_ERRORS, QUALITY):
        raise ValueError(f"not a foresight measurement: {measurement!r}")
    if limit < 1:
        raise ValueError(f"bad limit {limit!r}")
    conditions = ["time >= $start", "time < $end"]
    params: dict[str, ParamValue] = {"start": start_ns, "end": end_ns}
    for tag, values in sorted(tags.items()):
        if not values:
            continue
        names = [f"{tag}{n}" for n in range(len(values))]
        conditions.append("(" + " OR ".join(f"{quote_ident(tag)} = ${n}" for n in names) + ")")
        params.update(zip(names, values, strict=True))
    return Query(
        f"SELECT * FROM {quote_ident(measurement)} WHERE {' AND '.join(conditions)} "
        f"ORDER BY time DESC LIMIT {limit:d}",
        params,
    )
