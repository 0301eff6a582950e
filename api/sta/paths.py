"""SensorThings resource paths: `Things('SL-1')/Datastreams`, `Datastreams('x')/Observations/$ref`,
`Things('SL-1')/name/$value`, read into segments (and ids written back into links)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from api.sta.catalog import SETS, Ref
from api.sta.errors import bad_request

MAX_SEGMENTS = 8
_SEGMENT = re.compile(r"^(?P<name>[A-Za-z]{1,40})(?:\((?P<id>'(?:[^']|''){0,300}'|\d{1,20})\))?$")


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class ResourcePath:
    segments: tuple[Segment, ...]
    ref: bool = False  # ends in $ref
    value: bool = False  # ends in $value


def parse_path(text: str) -> ResourcePath:
    parts = [p for p in text.strip("/").split("/") if p]
    ref = value = False
    if parts and parts[-1] in ("$ref", "$value"):
        ref, value = parts[-1] == "$ref", parts[-1] == "$value"
        parts = parts[:-1]
    if not parts or len(parts) > MAX_SEGMENTS:
        raise bad_request(f"a resource path has 1 to {MAX_SEGMENTS} segments")
    segments = []
    for part in parts:
        match = _SEGMENT.match(part)
        if match is None:
            raise bad_request(f"{part[:80]!r} is not a resource path segment like Things('id')")
        raw = match.group("id")
        ident = None if raw is None else raw[1:-1].replace("''", "'") if raw[0] == "'" else raw
        segments.append(Segment(match.group("name"), ident))
    if segments[0].name not in SETS:
        raise bad_request(f"{segments[0].name!r} is not an entity set; the sets are {SETS}")
    return ResourcePath(tuple(segments), ref, value)


def link(base: str, ref: Ref) -> str:
    return f"{base}/{ref.kind}('{ref.id.replace(chr(39), chr(39) * 2)}')"
