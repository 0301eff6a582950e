"""Observations, read from InfluxDB and nowhere else: a Datastream's page of Observations is one
InfluxQL statement (its filter translated by pushdown.py, $top/$skip as LIMIT/OFFSET, $orderby on
phenomenonTime as ORDER BY time), its $count another; Datastreams' phenomenonTime spans are the
first and last time of each field, a pair of statements per field for a whole page.

Statements follow the rules of api.core.query: identifiers from the contract only, quoted;
client values bound as parameters; LIMIT and OFFSET formatted from ints.
"""

# S608: every statement below is built from contract identifiers and bound parameters.
# ruff: noqa: S608

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from odata_query import ast

from api.core.query import DEVICE_TAG, Query, fetch_all
from api.core.readings import typed
from api.sta.errors import bad_request
from api.sta.options import Options
from api.sta.pushdown import Condition, translate
from common.influx import AsyncInfluxClient, ParamValue, quote_ident
from device_profiles import Device, Profile

MAX_DEVICES_PER_STATEMENT = 200


@dataclass(frozen=True, slots=True)
class Series:
    """One Datastream's stored values: the device and field it reads."""

    device: Device
    profile: Profile
    field: str


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[tuple[int, Any]]  # (time in ns, typed result)
    count: int | None


def _where(
    series: Series, tree: ast._Node | None, time_ns: int | None
) -> tuple[str, dict[str, ParamValue]]:
    condition = Condition(series.field, series.profile.fields[series.field])
    condition.params["device_id"] = series.device.device_id
    parts = [f"{DEVICE_TAG} = $device_id"]
    if time_ns is not None:
        parts.append(f"time = {condition.bind(time_ns)}")
    if tree is not None:
        parts.append(translate(tree, condition))
    return " AND ".join(parts), condition.params


def order_of(options: Options) -> str:
    """ORDER BY of a page: phenomenonTime is the only order InfluxDB keeps."""
    if not options.orderby:
        return "ASC"
    if len(options.orderby) > 1 or options.orderby[0][0] != ("phenomenonTime",):
        raise bad_request("$orderby on Observations: phenomenonTime [asc|desc] only")
    return "DESC" if options.orderby[0][1] else "ASC"


def page_query(series: Series, options: Options, *, limit: int) -> Query:
    """The page's statement, then (with $count) the count's."""
    where, params = _where(series, options.filter, None)
    f, m = quote_ident(series.field), quote_ident(series.profile.measurement)
    text = (
        f"SELECT {f} FROM {m} WHERE {where} "
        f"ORDER BY time {order_of(options)} LIMIT {limit:d} OFFSET {options.skip:d}"
    )
    if options.count:
        text += f"; SELECT count({f}) FROM {m} WHERE {where}"
    return Query(text, params)


def one_query(series: Series, time_ns: int) -> Query:
    where, params = _where(series, None, time_ns)
    f, m = quote_ident(series.field), quote_ident(series.profile.measurement)
    return Query(f"SELECT {f} FROM {m} WHERE {where}", params)


async def read_page(
    influx: AsyncInfluxClient, series: Series, options: Options, limit: int
) -> Page:
    results = await fetch_all(influx, page_query(series, options, limit=limit))
    spec = series.profile.fields[series.field]
    rows = [
        (int(row[0]), typed(spec, row[1]))
        for s in (results[0] if results else [])
        for row in s.values
        if row[1] is not None
    ]
    count = None
    if options.count:
        found = [row[1] for s in results[1] for row in s.values] if len(results) > 1 else []
        count = int(found[0]) if found else 0
    return Page(rows, count)


async def read_one(influx: AsyncInfluxClient, series: Series, time_ns: int) -> Any | None:
    results = await fetch_all(influx, one_query(series, time_ns))
    spec = series.profile.fields[series.field]
    for s in results[0] if results else []:
        for row in s.values:
            if row[1] is not None:
                return typed(spec, row[1])
    return None


def spans_query(profile: Profile, fields: Sequence[str], device_ids: Sequence[str]) -> Query:
    """Per field, the first and the last time each device stored it (one series per device)."""
    params: dict[str, ParamValue] = {f"d{n}": d for n, d in enumerate(device_ids)}
    devices = "(" + " OR ".join(f"{DEVICE_TAG} = $d{n:d}" for n in range(len(device_ids))) + ")"
    m = quote_ident(profile.measurement)
    statements = [
        f"SELECT {fn}({quote_ident(f)}) FROM {m} WHERE {devices} GROUP BY {DEVICE_TAG}"
        for f in fields
        for fn in ("first", "last")
    ]
    return Query("; ".join(statements), params)


async def spans(
    influx: AsyncInfluxClient, wanted: Sequence[tuple[Device, Profile, str]]
) -> dict[tuple[str, str], tuple[int, int]]:
    """(device id, field) → (first, last) time stored, for the Datastreams of a page."""
    by_profile: dict[str, tuple[Profile, set[str], list[str]]] = {}
    for device, profile, field in wanted:
        entry = by_profile.setdefault(profile.profile, (profile, set(), []))
        entry[1].add(field)
        if device.device_id not in entry[2]:
            entry[2].append(device.device_id)
    found: dict[tuple[str, str], list[int]] = defaultdict(list)
    for profile, fields, ids in by_profile.values():
        ordered = sorted(fields)
        for start in range(0, len(ids), MAX_DEVICES_PER_STATEMENT):
            chunk = ids[start : start + MAX_DEVICES_PER_STATEMENT]
            results = await fetch_all(influx, spans_query(profile, ordered, chunk))
            for n, statement in enumerate(results):
                for s in statement:
                    for row in s.values:
                        found[(s.tags.get("device_id", ""), ordered[n // 2])].append(int(row[0]))
    return {key: (min(times), max(times)) for key, times in found.items() if times}
