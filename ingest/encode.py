"""Encode: InfluxDB line protocol, escaped so that no value can add a line, a tag or a field.

Escaping rules (InfluxDB 1.x–3.x): measurement — comma and space; tag keys, tag values, field
keys — comma, equals, space; string field values — double quote and backslash. Newlines cannot be
escaped at all, so they are refused here: tag values and field keys come from the validated
contract, string values from validation (no control characters), and dead letters are encoded as
JSON text, which has none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ingest.stages import Enriched, FieldValue

_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ "})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STRING = str.maketrans({'"': r"\"", "\\": r"\\"})


class EncodeError(ValueError):
    """A value that line protocol cannot carry safely (a newline, a trailing backslash)."""


def _safe(text: str) -> str:
    if "\n" in text or "\r" in text:
        raise EncodeError("newline in an identifier or tag value")
    return text


def tag(text: str) -> str:
    escaped = _safe(text).translate(_KEY)
    if escaped.endswith("\\"):
        # A trailing backslash would escape the separator that follows it.
        raise EncodeError("tag value ends with a backslash")
    return escaped


def string_value(text: str) -> str:
    return '"' + _safe(text).translate(_STRING) + '"'


# By exact type: bool is a subclass of int and must not become 1i. Floats in their shortest
# round-trip form (NaN and infinity never get here: validation refuses them).
_FORMAT: dict[type, Callable[[Any], str]] = {
    float: repr,
    bool: lambda v: "true" if v else "false",
    int: lambda v: f"{v}i",
    str: string_value,
}


def field_value(value: FieldValue) -> str:
    return _FORMAT[type(value)](value)


def fields(values: dict[str, FieldValue]) -> str:
    return ",".join(f"{tag(k)}={field_value(v)}" for k, v in values.items())


def line(
    measurement: str, tags: dict[str, str], values: dict[str, FieldValue], time_ns: int
) -> str:
    tag_part = "".join(f",{tag(k)}={tag(v)}" for k, v in sorted(tags.items()) if v != "")
    return f"{_safe(measurement).translate(_MEASUREMENT)}{tag_part} {fields(values)} {time_ns}"


class ReadingEncoder:
    """Lines for readings, escaping each series (measurement + tags) and field key only once.

    Both come from the validated contract and registry, so the caches are bounded by the number
    of devices and fields; values are escaped every time.
    """

    def __init__(self) -> None:
        self._series: dict[tuple[str, str, str], str] = {}
        self._keys: dict[str, str] = {}

    def encode(self, reading: Enriched) -> str:
        key = (reading.measurement, reading.device_id, reading.district)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = line(
                reading.measurement,
                {"device_id": reading.device_id, "district": reading.district},
                {},
                0,
            ).split(" ", 1)[0]
        keys = self._keys
        parts = []
        for name, value in reading.fields.items():
            prefix = keys.get(name)
            if prefix is None:
                prefix = keys[name] = tag(name) + "="
            parts.append(prefix + _FORMAT[type(value)](value))
        return f"{series} {','.join(parts)} {reading.time_ns}"
