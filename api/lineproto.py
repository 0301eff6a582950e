"""InfluxDB line protocol for the few points the API writes itself (alarm events). Tag values
come from the contract; field strings may hold anything a device sent, so both are escaped."""

from __future__ import annotations

_TAG = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\\": "\\\\", "\n": " ", "\r": " "})
_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\\": "\\\\"})


def _field(value: bool | int | float | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    # Line protocol has no escape for a line break: it becomes a space.
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ").replace("\r", " ")
    return f'"{escaped}"'


def encode_line(
    measurement: str,
    tags: dict[str, str],
    values: dict[str, bool | int | float | str],
    time_ns: int,
) -> str:
    tag_text = "".join(
        f",{k.translate(_TAG)}={v.translate(_TAG)}" for k, v in sorted(tags.items()) if v
    )
    field_text = ",".join(f"{k.translate(_TAG)}={_field(v)}" for k, v in values.items())
    return f"{measurement.translate(_MEASUREMENT)}{tag_text} {field_text} {time_ns:d}"
