"""Encode: InfluxDB line protocol, escaped so that no value can add a line, a tag or a field.

Escaping rules (InfluxDB 1.x–3.x): measurement — comma and space; tag keys, tag values, field
keys — comma, equals, space; string field values — double quote and backslash. Newlines cannot be
escaped at all, so they are refused here: tag values and field keys come from the validated
contract, string values from validation (no control characters), and dead letters are encoded as
JSON text, which has none.
"""

from __future__ import annotations

from collections.abc import Callable, Container
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


def series(measurement: str, tags: dict[str, str]) -> str:
    """Measurement and tags, escaped: a line's part before its first unescaped space."""
    tag_part = "".join(f",{tag(k)}={tag(v)}" for k, v in sorted(tags.items()) if v != "")
    return f"{_safe(measurement).translate(_MEASUREMENT)}{tag_part}"


def line(
    measurement: str, tags: dict[str, str], values: dict[str, FieldValue], time_ns: int
) -> str:
    return f"{series(measurement, tags)} {fields(values)} {time_ns}"


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
        known = self._series.get(key)
        if known is None:
            # Not line(...).split(" ")[0]: an escaped space in a district name is no separator.
            known = self._series[key] = series(
                reading.measurement, {"device_id": reading.device_id, "district": reading.district}
            )
        keys = self._keys
        parts = []
        for name, value in reading.fields.items():
            prefix = keys.get(name)
            if prefix is None:
                prefix = keys[name] = tag(name) + "="
            parts.append(prefix + _FORMAT[type(value)](value))
        return f"{known} {','.join(parts)} {reading.time_ns}"


# --- reading back (lines from the disk spool) -------------------------------------------------

_UNESCAPE = {"\\ ": " ", "\\,": ",", "\\=": "="}


def parse_line(text: str, measurements: Container[str]) -> Enriched | None:
    """The reading behind a line this module encoded; None for other measurements' lines (dead
    letters, change marks) and for anything it cannot read."""
    try:
        series, rest = _until_unescaped(text, " ")
        fields_part, time_part = rest.rsplit(" ", 1)
        parts = _split_unescaped(series, ",")
        measurement = _unescape(parts[0])
        if measurement not in measurements:
            return None
        tags = dict(_key_value(part) for part in parts[1:])
        return Enriched(
            measurement,
            tags.get("device_id", ""),
            tags.get("district", ""),
            int(time_part),
            _fields_of(fields_part),
        )
    except ValueError:
        return None


def _unescape(text: str) -> str:
    for escaped, plain in _UNESCAPE.items():
        text = text.replace(escaped, plain)
    return text


def _until_unescaped(text: str, separator: str) -> tuple[str, str]:
    at = -1
    while True:
        at = text.find(separator, at + 1)
        if at < 0:
            raise ValueError(f"no {separator!r}")
        if at == 0 or text[at - 1] != "\\":
            return text[:at], text[at + 1 :]


def _split_unescaped(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    while True:
        try:
            head, text = _until_unescaped(text, separator)
        except ValueError:
            return [*parts, text]
        parts.append(head)


def _key_value(part: str) -> tuple[str, str]:
    key, value = _until_unescaped(part, "=")
    return _unescape(key), _unescape(value)


def _fields_of(text: str) -> dict[str, FieldValue]:
    fields: dict[str, FieldValue] = {}
    while text:
        key, text = _until_unescaped(text, "=")
        if text.startswith('"'):
            value, text = _string_of(text)
            fields[_unescape(key)] = value
        else:
            raw, _, text = text.partition(",")
            fields[_unescape(key)] = _scalar_of(raw)
            continue
        if text.startswith(","):
            text = text[1:]
    return fields


def _string_of(text: str) -> tuple[str, str]:
    """A quoted string value at the start of `text`, and what follows its closing quote."""
    out = []
    at = 1
    while at < len(text):
        char = text[at]
        if char == "\\" and at + 1 < len(text) and text[at + 1] in '"\\':
            out.append(text[at + 1])
            at += 2
        elif char == '"':
            return "".join(out), text[at + 1 :]
        else:
            out.append(char)
            at += 1
    raise ValueError("unterminated string")


def _scalar_of(raw: str) -> FieldValue:
    if raw in ("true", "false"):
        return raw == "true"
    if raw.endswith("i"):
        return int(raw[:-1])
    return float(raw)
