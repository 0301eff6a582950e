"""The geometry `$filter` needs: WKT literals (`geography'POLYGON((…))'`) and GeoJSON points read
into plain tuples, and the relations between a point and a point, a line or a polygon, computed
on the plane of longitude and latitude as SensorThings servers over PostGIS geometry do.

Every device's location is a point, so one side of a relation is always a point here; a relation
between two polygons or lines is refused (it cannot arise from our data).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Any

from api.sta.errors import bad_request

MAX_VERTICES = 500

Coord = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Shape:
    kind: str  # Point, LineString, Polygon
    rings: tuple[tuple[Coord, ...], ...]  # a point: one ring of one coordinate

    @property
    def point(self) -> Coord:
        return self.rings[0][0]


_WKT = re.compile(r"^\s*(POINT|LINESTRING|POLYGON)\s*(\(.*\))\s*$", re.IGNORECASE | re.DOTALL)
_RING = re.compile(r"\(([^()]*)\)")
_SRID = re.compile(r"^\s*SRID=\d{1,6};", re.IGNORECASE)


def from_wkt(text: str) -> Shape:
    match = _WKT.match(_SRID.sub("", text))
    if match is None:
        raise bad_request(f"geography {text[:60]!r}: only POINT, LINESTRING and POLYGON are read")
    kind = {"POINT": "Point", "LINESTRING": "LineString", "POLYGON": "Polygon"}[
        match.group(1).upper()
    ]
    rings = tuple(_coords(ring) for ring in _RING.findall(match.group(2)))
    if not rings or sum(len(r) for r in rings) > MAX_VERTICES:
        raise bad_request(f"geography {text[:60]!r}: 1 to {MAX_VERTICES} coordinates")
    if kind == "Point" and (len(rings) != 1 or len(rings[0]) != 1):
        raise bad_request(f"geography {text[:60]!r}: a POINT has one coordinate")
    if kind == "Polygon" and any(len(r) < 4 or r[0] != r[-1] for r in rings):
        raise bad_request(f"geography {text[:60]!r}: a POLYGON's rings are closed, 4+ points")
    return Shape(kind, rings)


def _coords(text: str) -> tuple[Coord, ...]:
    out = []
    for pair in text.split(","):
        parts = pair.split()
        try:
            x, y = (float(p) for p in parts)
        except ValueError:
            raise bad_request(f"geography: {pair.strip()[:40]!r} is not `lon lat`") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise bad_request("geography: coordinates must be finite numbers")
        out.append((x, y))
    return tuple(out)


def from_geojson(value: Any) -> Shape | None:
    if isinstance(value, dict) and value.get("type") == "Point":
        x, y = value["coordinates"]
        return Shape("Point", (((float(x), float(y)),),))
    return None


def _in_ring(point: Coord, ring: tuple[Coord, ...]) -> bool:
    x, y = point
    inside = False
    for (x1, y1), (x2, y2) in itertools.pairwise(ring):
        if (y1 > y) != (y2 > y) and x < (x2 - x1) * (y - y1) / (y2 - y1) + x1:
            inside = not inside
    return inside


def _on_segment(p: Coord, a: Coord, b: Coord) -> bool:
    cross = (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])
    if abs(cross) > 1e-12:
        return False
    return min(a[0], b[0]) <= p[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= p[1] <= max(a[1], b[1])


def _on_boundary(point: Coord, shape: Shape) -> bool:
    return any(
        _on_segment(point, a, b) for ring in shape.rings for a, b in itertools.pairwise(ring)
    )


def _interior(point: Coord, shape: Shape) -> bool:
    outer, *holes = shape.rings
    return _in_ring(point, outer) and not any(_in_ring(point, h) for h in holes)


def relate(name: str, a: Shape, b: Shape) -> bool:
    """`name` (within, contains, intersects, disjoint, equals, touches) between two shapes, one
    of them a point."""
    if a.kind != "Point" and b.kind != "Point":
        raise bad_request(f"{name}: one side must be a point (every location here is one)")
    if name == "contains":
        return relate("within", b, a)
    if a.kind != "Point":  # symmetric relations: put the point first
        a, b = b, a
    p = a.point
    if b.kind == "Point":
        same = p == b.point
        if name in ("within", "intersects", "equals"):
            return same
        return not same if name == "disjoint" else False  # two points never touch
    boundary = _on_boundary(p, b)
    inside = b.kind == "Polygon" and _interior(p, b) and not boundary
    if name == "within":
        return inside
    if name == "intersects":
        return inside or boundary
    if name == "disjoint":
        return not (inside or boundary)
    if name == "touches":
        return boundary
    if name == "equals":
        return False
    raise bad_request(f"{name} is not supported on these shapes")


def distance(a: Shape, b: Shape) -> float:
    if a.kind != "Point" or b.kind != "Point":
        raise bad_request("geo.distance: between two points only")
    return math.dist(a.point, b.point)
