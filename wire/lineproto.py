"""InfluxDB line protocol: the one encoder of the tree, and the reader of what it wrote.

Ingest writes readings, dead letters and change marks with it, the API its alarm events, the
tests and benchmarks their seeded data; so every writer escapes alike and a line read back from
the disk spool is the line that was encoded.

Escaping rules (InfluxDB 1.x–3.x): measurement — comma and space; tag keys, tag values, field
keys — comma, equals, space; string field values — double quote and backslash. A line break
cannot be escaped at all, so it is refused (EncodeError): tag values and field keys come from the
validated contract, string values from validation (no control characters), dead letters are
encoded as JSON text, which has none, and free text a person typed goes through `one_line`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FieldValue = float | int | bool | str

_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ "})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STRING = str.maketrans({'"': r"\"", "\\": r"\\"})
_BREAKS = str.maketrans({"\n": " ", "\r": " "})


class EncodeError(ValueError):
    """A value that line protocol cannot carry safely (a newline, a trailing backslash)."""


def _safe(text: str) -> str:
    if "\n" in text or "\r" in text:
        raise EncodeError("newline in an identifier or tag value")
    return text


def one_line(text: str) -> str:
    """Free text (an operator's note) with its line breaks as spaces: line protocol has no
    escape for them."""
    return text.translate(_BREAKS)


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
FORMAT: dict[type, Callable[[Any], str]] = {
    float: repr,
    bool: lambda v: "true" if v else "false",
    int: lambda v: f"{v}i",
    str: string_value,
}


def field_value(value: FieldValue) -> str:
    return FORMAT[type(value)](value)


def fields(values: dict[str, FieldValue]) -> str:
    return ",".join(f"{tag(k)}={field_value(v)}" for k, v in values.items())


def series(measurement: str, tags: dict[str, str]) -> str:
    """Measurement and tags, escaped: a line's part before its first unescaped space. Tags are
    sorted (InfluxDB's own order, the cheapest to index); an empty tag value is left out."""
    tag_part = "".join(f",{tag(k)}={tag(v)}" for k, v in sorted(tags.items()) if v != "")
    return f"{_safe(measurement).translate(_MEASUREMENT)}{tag_part}"


def line(
    measurement: str, tags: dict[str, str], values: dict[str, FieldValue], time_ns: int
) -> str:
    return f"{series(measurement, tags)} {fields(values)} {time_ns}"


# --- reading back -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    time_ns: int


_UNESCAPE = {"\\ ": " ", "\\,": ",", "\\=": "="}


def parse_line(text: str) -> Line:
    """The point behind a line `line` encoded; ValueError for anything else."""
    head, rest = _until_unescaped(text, " ")
    fields_part, time_part = rest.rsplit(" ", 1)
    parts = _split_unescaped(head, ",")
    return Line(
        _unescape(parts[0]),
        dict(_key_value(part) for part in parts[1:]),
        _fields_of(fields_part),
        int(time_part),
    )


def measurement_of(text: str) -> str:
    """Only the measurement of a line: cheaper than parsing it whole."""
    return _unescape(_split_unescaped(_until_unescaped(text, " ")[0], ",")[0])


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
    found: dict[str, FieldValue] = {}
    while text:
        key, text = _until_unescaped(text, "=")
        if text.startswith('"'):
            value, text = _string_of(text)
            found[_unescape(key)] = value
        else:
            raw, _, text = text.partition(",")
            found[_unescape(key)] = _scalar_of(raw)
            continue
        if text.startswith(","):
            text = text[1:]
    return found


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
