"""Per-device spans: one device's readings of one field over a span of time, kept in a form a later
span's adds to exactly (the rollup keeper's ledger of an open day, api.compute.ledger): the sum,
count, min, max and last value of its readings (what api.core.rollups folds into a rollup), and a
counter's increases and newest reading.

A ledger holds a district's day of them for every field, so they are kept in columns
(SpanColumns: arrays of numbers, a row index, device ids interned): 151 bytes a device and
field, against 332 as DeviceSpan objects (tracemalloc, 300,000 of them); with objects the
keeper's ledgers took it from 181-211 MB resident to 507 MB at 100,000 devices (bench.api_bench,
run 14).
"""

from __future__ import annotations

import bisect
import math
import sys
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from api.core.readings import Value
from api.core.rollups import (
    NUMERIC,
    FieldRollup,
    _Acc,
    _fold,
    _lower,
    _upper,
    eq_values,
    equals_key,
)
from device_profiles import FieldKind, FieldSpec

NONE = math.nan  # a column's "no value" (readings are never NaN: JSON has none, ingest refuses)


@dataclass(slots=True)
class DeviceSpan:
    """One device's readings of one field over a span."""

    acc: _Acc | None = None  # its readings in the span; None: none
    inc: float = 0.0  # a counter's increases in the span, resets counted from 0
    stepped: bool = False  # one increase at least: what a rollup's `incn` counts
    last: float | None = None  # a counter's newest reading at the span's end (or before it)


def device_spans(
    spec: FieldSpec,
    devices: Iterable[tuple[str, float | None, Sequence[tuple[int, Value]]]],
    cuts: Sequence[int],
) -> list[dict[str, DeviceSpan]]:
    """For each span between consecutive `cuts`, each device's DeviceSpan of it (devices
    without a reading in a span are left out of it), from every device's (id, previous
    reading, time-ordered readings) in one pass: the same readings and increases as
    api.core.rollups.rollups_of_span would count in a window over that span."""
    numeric = spec.type in NUMERIC
    counter = spec.effective_kind is FieldKind.COUNTER
    out: list[dict[str, DeviceSpan]] = [{} for _ in cuts[1:]]
    for device, previous, readings in devices:
        last = previous
        for t, v in readings:
            k = bisect.bisect_right(cuts, t) - 1
            if not 0 <= k < len(out):
                continue
            span = out[k].get(device)
            if span is None:
                span = out[k][device] = DeviceSpan(_Acc(), last=last)
            assert span.acc is not None  # created with one
            span.acc.add(v, numeric)
            if counter and not isinstance(v, str):
                x = float(v)
                if last is not None:
                    span.inc += x - last if x >= last else x  # a reset counts from 0
                    span.stepped = True
                last = span.last = x
    return out


def _opt(x: float) -> float | None:
    return None if math.isnan(x) else x


class SpanColumns:
    """DeviceSpans of many devices (one field, one span) in columns. A device's last value is
    kept only for a field whose devices are counted by value (`counting`: states, booleans),
    as its `equals` key: all a rollup counts of it."""

    __slots__ = (
        "_clast",
        "_count",
        "_counting",
        "_hi",
        "_inc",
        "_key_of",
        "_keys",
        "_last",
        "_lo",
        "_rows",
        "_total",
    )

    def __init__(self, *, counting: bool) -> None:
        self._counting = counting
        self._key_of: dict[str, int] = {}
        self._rows: dict[str, int] = {}
        self._count = array("q")
        self._total, self._lo, self._hi = array("d"), array("d"), array("d")
        self._inc, self._clast = array("d"), array("d")  # stepped: inc is not NaN
        self._last = array("i")  # index into _keys, -1: none
        self._keys: list[str] = []

    def __len__(self) -> int:
        return len(self._rows)

    def copy(self) -> SpanColumns:
        out = SpanColumns(counting=self._counting)
        out._key_of = dict(self._key_of)
        out._rows = dict(self._rows)
        for name in ("_count", "_total", "_lo", "_hi", "_inc", "_clast", "_last"):
            setattr(out, name, array(getattr(self, name).typecode, getattr(self, name)))
        out._keys = list(self._keys)
        return out

    def get(self, device: str) -> DeviceSpan | None:
        row = self._rows.get(device)
        return None if row is None else self._span(row)

    def _span(self, row: int) -> DeviceSpan:
        acc = None
        if self._count[row]:
            acc = _Acc()
            acc.count, acc.total = self._count[row], self._total[row]
            acc.lo, acc.hi = _opt(self._lo[row]), _opt(self._hi[row])
            acc.last = self._keys[self._last[row]] if self._last[row] >= 0 else None
        inc = self._inc[row]
        return DeviceSpan(
            acc, 0.0 if math.isnan(inc) else inc, not math.isnan(inc), _opt(self._clast[row])
        )

    def put(self, device: str, span: DeviceSpan) -> None:
        acc = span.acc
        key = -1
        if self._counting and acc is not None and acc.last is not None:
            text = equals_key(acc.last)
            key = self._key_of.get(text, -1)
            if key < 0:
                key = self._key_of[text] = len(self._keys)
                self._keys.append(text)
        values: tuple[int, float, float, float, float, float, int] = (
            acc.count if acc else 0,
            acc.total if acc else 0.0,
            NONE if acc is None or acc.lo is None else acc.lo,
            NONE if acc is None or acc.hi is None else acc.hi,
            span.inc if span.stepped else NONE,
            NONE if span.last is None else span.last,
            key,
        )
        count, total, lo, hi, inc, clast, last = values
        row = self._rows.get(device)
        if row is None:
            # One string per device id across a ledger's fields and copies, not one per read.
            self._rows[sys.intern(device)] = len(self._count)
            self._count.append(count)
            for column, number in zip(
                (self._total, self._lo, self._hi, self._inc, self._clast),
                (total, lo, hi, inc, clast),
                strict=True,
            ):
                column.append(number)
            self._last.append(last)
            return
        self._count[row] = count
        self._total[row], self._lo[row], self._hi[row] = total, lo, hi
        self._inc[row], self._clast[row], self._last[row] = inc, clast, last

    def items(self) -> Iterator[tuple[str, DeviceSpan]]:
        for device, row in self._rows.items():
            yield device, self._span(row)


def columns_of(spec: FieldSpec, spans: Mapping[str, DeviceSpan]) -> SpanColumns:
    out = SpanColumns(counting=bool(eq_values(spec)))
    for device, span in spans.items():
        out.put(device, span)
    return out


def _joined(a: _Acc | None, b: _Acc | None) -> _Acc | None:
    if a is None or b is None:
        return a if b is None else b
    out = _Acc()
    out.total, out.count = a.total + b.total, a.count + b.count
    out.lo, out.hi = _lower(a.lo, b.lo), _upper(a.hi, b.hi)
    out.last = b.last if b.count else a.last
    return out


def extend(earlier: SpanColumns, later: Mapping[str, DeviceSpan]) -> SpanColumns:
    """Each device's DeviceSpan over two consecutive spans (`earlier` is not changed)."""
    out = earlier.copy()
    for device, b in later.items():
        a = out.get(device)
        joined = b
        if a is not None:
            joined = DeviceSpan(
                _joined(a.acc, b.acc),
                a.inc + b.inc,
                a.stepped or b.stepped,
                a.last if b.last is None else b.last,
            )
        out.put(device, joined)
    return out


def rollup_of_spans(spec: FieldSpec, spans: SpanColumns) -> FieldRollup:
    """The rollup of a window from its devices' DeviceSpans over the whole of it."""
    numeric = spec.type in NUMERIC
    counter = spec.effective_kind is FieldKind.COUNTER
    counting = bool(eq_values(spec))
    out = FieldRollup()
    for _, span in spans.items():
        if span.stepped:
            out.inc += span.inc
            out.incn += 1
        if span.acc is not None:
            _fold(out, span.acc, numeric=numeric, counter=counter, counting=counting)
    return out
