"""Writes the sample city's district outlines (device_profiles/registry/sample_city_districts
.geojson): each district of simulators.city is the square its devices are spread over, a little
wider, cut where it meets a neighbour along the line halfway between their centres, so that no
two outlines overlap.

    .venv/bin/python scripts/sample_districts.py \
        > device_profiles/registry/sample_city_districts.geojson
"""

from __future__ import annotations

import json
import sys

from simulators.city import DISTRICTS

HALF = 0.034  # degrees: devices are spread ±0.03 around a district's centre

Point = tuple[float, float]  # (lon, lat)


def _clip(polygon: list[Point], keep: Point, other: Point) -> list[Point]:
    """`polygon` cut to the side of the bisector of keep–other where `keep` lies."""
    mx, my = (keep[0] + other[0]) / 2, (keep[1] + other[1]) / 2
    nx, ny = other[0] - keep[0], other[1] - keep[1]

    def side(p: Point) -> float:
        return (p[0] - mx) * nx + (p[1] - my) * ny

    out: list[Point] = []
    for a, b in zip(polygon, polygon[1:] + polygon[:1], strict=True):
        if side(a) <= 0:
            out.append(a)
        if (side(a) <= 0) != (side(b) <= 0):
            t = side(a) / (side(a) - side(b))
            out.append((a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])))
    return out


def outlines() -> dict[str, object]:
    features = []
    for district in DISTRICTS:
        centre = (district.longitude, district.latitude)
        x, y = centre
        ring = [(x - HALF, y - HALF), (x + HALF, y - HALF), (x + HALF, y + HALF)]
        ring.append((x - HALF, y + HALF))
        for other in DISTRICTS:
            if other is not district:
                ring = _clip(ring, centre, (other.longitude, other.latitude))
        coords = [[round(lon, 5), round(lat, 5)] for lon, lat in ring]
        features.append(
            {
                "type": "Feature",
                "properties": {"district": district.name},
                "geometry": {"type": "Polygon", "coordinates": [[*coords, coords[0]]]},
            }
        )
    return {"type": "FeatureCollection", "features": features}


if __name__ == "__main__":
    json.dump(outlines(), sys.stdout)
    sys.stdout.write("\n")
