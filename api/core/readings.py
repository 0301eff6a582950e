"""From InfluxDB result rows to readings typed by the profile contract.

InfluxDB's JSON writes the float 42.0 as `42`, so a number field can come back looking like an
integer (and an integer like a float after an aggregate). Values are re-typed from the contract;
anything that does not fit the contract's type is passed through as stored rather than hidden.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from api.core.query import Aggregate
from common.influx import Series
from device_profiles import FieldSpec, FieldType, Profile

# bool first: pydantic tries exact types in order, and True must never come out as 1.
Value = bool | int | float | str


@dataclass(frozen=True, slots=True)
class Reading:
    time_ns: int
    values: dict[str, Value]


def typed(spec: FieldSpec, value: Value) -> Value:
    if isinstance(value, bool):
        return value
    if spec.type is FieldType.NUMBER and isinstance(value, int):
        return float(value)
    if spec.type is FieldType.INTEGER and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def aggregate_value(agg: Aggregate, spec: FieldSpec, value: Value) -> Value:
    """The type of an aggregate follows the function: a mean is a float even of integers, a count
    an integer; the other functions return a field's own values."""
    if agg is Aggregate.MEAN:
        return float(value)
    if agg is Aggregate.COUNT:
        return int(value)
    return typed(spec, value)


def reading_from_row(profile: Profile, row: Mapping[str, Any]) -> Reading:
    """A row of `SELECT *`: tag columns and columns outside the contract are not part of the
    reading; fields the device did not send in this reading (null) are left out."""
    values = {
        name: typed(spec, row[name])
        for name, spec in profile.fields.items()
        if row.get(name) is not None
    }
    return Reading(time_ns=int(row["time"]), values=values)


def first_reading(profile: Profile, series: Iterable[Series]) -> Reading | None:
    for item in series:
        for row in item.rows():
            return reading_from_row(profile, row)
    return None


def readings_by_device(profile: Profile, series: Iterable[Series]) -> dict[str, Reading]:
    """Readings of a `GROUP BY device_id ... LIMIT 1` query, keyed by the device_id tag.

    The same as reading_from_row on each series' first row, without a dict per row: the start-up
    load and every reconcile run this for every device of the city."""
    out: dict[str, Reading] = {}
    plans: dict[tuple[str, ...], tuple[int, list[tuple[str, FieldSpec, int]]]] = {}
    for item in series:
        device_id = item.tags.get("device_id")
        if device_id is None or not item.values:
            continue
        plan = plans.get(item.columns)
        if plan is None:
            at = {column: n for n, column in enumerate(item.columns)}
            plan = plans[item.columns] = (
                at["time"],
                [(name, spec, at[name]) for name, spec in profile.fields.items() if name in at],
            )
        at_time, fields = plan
        row = item.values[0]
        values = {name: typed(spec, row[n]) for name, spec, n in fields if row[n] is not None}
        out[device_id] = Reading(time_ns=int(row[at_time]), values=values)
    return out
