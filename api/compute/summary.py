"""District summary figures, computed from each reporting device's latest reading.

A profile's `summary:` list in YAML names figures such as "lamps on" (count of devices whose
powerState is "on") or "total power" (sum of powerConsumption). Each figure looks at exactly one
value per device: the field as it appears in that device's latest reading inside the window.

- A device whose latest reading lacks the field (the device sent a subset of fields, or the value
  was null) contributes nothing to that figure, even if an older reading had the field: mixing
  values from different moments would describe a state the device was never in.
- sum, mean, min, max use numeric values only (a boolean or text value is not a number) and are
  null when no device contributes a value: "no data" is not the same as 0.
- count is the number of devices whose value equals `equals` (type-strict: "1" is not 1 and True
  is not 1), or that have the field at all when `equals` is absent; it is 0, never null.
- Each figure reports `devices`: how many devices' values it was computed over (for count, the
  devices whose latest reading had the field).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeGuard

from api.core.readings import Reading, Value
from device_profiles import SummaryOp, SummarySpec

Number = int | float


@dataclass(frozen=True, slots=True)
class Figure:
    spec: SummarySpec
    value: Number | None
    devices: int


def _equals(value: Value, target: str | float | bool) -> bool:
    # Type-strict for booleans: Python's True == 1 would otherwise match across field types.
    if isinstance(value, bool) or isinstance(target, bool):
        return type(value) is type(target) and value == target
    return value == target


def _numeric(value: Value) -> TypeGuard[Number]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _sum(numbers: list[Number]) -> Number:
    # Exact integer sums stay integers; float sums use fsum so the order of devices is irrelevant.
    return sum(numbers) if all(isinstance(n, int) for n in numbers) else math.fsum(numbers)


def _mean(numbers: list[Number]) -> Number:
    return math.fsum(numbers) / len(numbers)


_REDUCE: dict[SummaryOp, Callable[[list[Number]], Number]] = {
    SummaryOp.SUM: _sum,
    SummaryOp.MEAN: _mean,
    SummaryOp.MIN: min,
    SummaryOp.MAX: max,
}


def figure(spec: SummarySpec, readings: Iterable[Reading]) -> Figure:
    present = [r.values[spec.field] for r in readings if spec.field in r.values]
    if spec.op is SummaryOp.COUNT:
        target = spec.equals
        hits = sum(1 for v in present if target is None or _equals(v, target))
        return Figure(spec, hits, len(present))
    numbers = [v for v in present if _numeric(v)]
    if not numbers:
        return Figure(spec, None, 0)
    return Figure(spec, _REDUCE[spec.op](numbers), len(numbers))
