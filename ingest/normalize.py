"""Normalize: a vendor variant's reading → the canonical profile's names, units and values.

Runs between decode and validate, for devices the registry marks with a variant. Nothing is
validated here: a value that cannot be converted is passed on unchanged, so validation rejects it
with the precise reason (wrong_type, invalid_value) rather than this stage guessing.

What no mapping takes is passed on too, under its dotted path (`meter.thd_pct`), so that the
profile's `unknown_fields` policy applies to it as to any field it does not declare: a firmware
update that renames or adds a vendor field, or sends `"meter": null`, was dropped here without
anybody learning of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from device_profiles import Profile, Variant
from device_profiles.units import apply, conversion

_MISSING = object()


@dataclass(frozen=True, slots=True)
class _Mapping:
    path: tuple[str, ...]
    to: str
    factor: float
    offset: float
    values: dict[str, Any] | None


def _dig(obj: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = obj
    for key in path:
        if not isinstance(value, dict):
            return _MISSING
        value = value.get(key, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def _convert(value: Any, factor: float, offset: float) -> Any:
    if type(value) not in (int, float) or (factor == 1.0 and offset == 0.0):
        return value
    return apply(value, (factor, offset))


class Normalizer:
    def __init__(self, variant: Variant, profile: Profile) -> None:
        self._canonical = frozenset(profile.fields) | {profile.timestamp.field, "device_id"}
        # Every mapped path, and every object on the way to one: what the vendor sends there is
        # taken (or, an object, looked into), not left over.
        self._taken = frozenset(variant.fields) | {variant.timestamp_field or ""}
        self._parents = frozenset(
            ".".join(path.split(".")[:n])
            for path in variant.fields
            for n in range(1, path.count(".") + 1)
        )
        self._ts_field = profile.timestamp.field
        self._vendor_ts = variant.timestamp_field
        self._mappings = [
            self._compile(path, m.to, m.unit, m.values, profile)
            for path, m in variant.fields.items()
        ]

    @staticmethod
    def _compile(
        path: str, to: str, unit: str | None, values: dict[str, Any] | None, profile: Profile
    ) -> _Mapping:
        target_unit = profile.fields[to].unit
        factor, offset = (1.0, 0.0)
        if unit is not None and target_unit is not None:
            # load_variants refused any pair without a conversion
            factor, offset = conversion(unit, target_unit) or (1.0, 0.0)
        return _Mapping(tuple(path.split(".")), to, factor, offset, values)

    def __call__(self, obj: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in obj.items() if k in self._canonical}
        if self._vendor_ts is not None and self._vendor_ts in obj:
            out[self._ts_field] = obj[self._vendor_ts]
        for mapping in self._mappings:
            value = _dig(obj, mapping.path)
            if value is _MISSING:
                continue
            if mapping.values is not None and not isinstance(value, dict | list):
                value = mapping.values.get(
                    str(value).lower() if type(value) is bool else str(value), value
                )
            out[mapping.to] = _convert(value, mapping.factor, mapping.offset)
        for key, value in obj.items():
            if key not in self._canonical:
                self._left_over(key, value, out)
        return out

    def _left_over(self, path: str, value: Any, out: dict[str, Any]) -> None:
        """What no mapping took of `value` at `path`, into `out` under its dotted path."""
        if path in self._taken:
            return
        if path in self._parents and isinstance(value, dict):
            for key, inner in value.items():
                self._left_over(f"{path}.{key}", inner, out)
            return
        out.setdefault(path, value)
