"""Encode: readings as InfluxDB line protocol (wire.lineproto), escaping each series and field
key once; and the reading back of spooled lines into readings."""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping

from ingest.stages import Enriched
from wire.lineproto import FORMAT, FieldValue, measurement_of, parse_line, series, tag


class ReadingEncoder:
    """Lines for readings, escaping each series (measurement + tags) and field key only once.

    Both come from the validated contract and registry, so the caches are bounded by the number
    of devices and fields; values are escaped every time. A device the registry does not know
    (CITYSENSE_UNKNOWN_DEVICES=accept) is escaped every time, never kept: any number of ids
    could come that way, and each kept one cost half a kilobyte for ever.
    """

    def __init__(self) -> None:
        self._series: dict[tuple[str, str, str], str] = {}
        self._keys: dict[str, str] = {}

    def series_of(self, reading: Enriched, *, keep: bool = True) -> str:
        """The reading's measurement and tags as line protocol, escaped once per device (every
        time if not `keep`: a device the registry does not know)."""
        return self.series_for(reading.measurement, reading.device_id, reading.district, keep)

    def series_for(self, measurement: str, device_id: str, district: str, keep: bool = True) -> str:
        key = (measurement, device_id, district)
        known = self._series.get(key)
        if known is None:
            # Not line(...).split(" ")[0]: an escaped space in a district name is no separator.
            known = series(measurement, {"device_id": device_id, "district": district})
            if keep:
                self._series[key] = known
        return known

    def fields_in_order(self, fields: Mapping[str, FieldValue], order: Iterable[str]) -> str:
        """`fields` as line protocol in `order` (their profile's), whatever order they came in:
        the text ingest.compiled returns for the readings it accepts, so that dedupe gets one
        digest of a reading whichever path it took (tests/unit/test_compiled.py)."""
        keys = self._keys
        parts = []
        for name in order:
            if name in fields:
                value = fields[name]
                prefix = keys.get(name)
                if prefix is None:
                    prefix = keys[name] = tag(name) + "="
                parts.append(prefix + FORMAT[type(value)](value))
        return ",".join(parts)

    def line(self, reading: Enriched, encoded_fields: str) -> str:
        """The line of a reading whose fields are already encoded (ingest.compiled)."""
        return f"{self.series_of(reading)} {encoded_fields} {reading.time_ns}"

    def encode(self, reading: Enriched, *, keep: bool = True) -> str:
        known = self.series_of(reading, keep=keep)
        keys = self._keys
        parts = []
        for name, value in reading.fields.items():
            prefix = keys.get(name)
            if prefix is None:
                prefix = keys[name] = tag(name) + "="
            parts.append(prefix + FORMAT[type(value)](value))
        return f"{known} {','.join(parts)} {reading.time_ns}"


def reading_of(text: str, measurements: Container[str]) -> Enriched | None:
    """The reading behind a line ReadingEncoder encoded; None for other measurements' lines
    (dead letters, change marks) and for anything it cannot read."""
    try:
        if measurement_of(text) not in measurements:
            return None
        point = parse_line(text)
    except ValueError:
        return None
    return Enriched(
        point.measurement,
        point.tags.get("device_id", ""),
        point.tags.get("district", ""),
        point.time_ns,
        point.fields,
    )
