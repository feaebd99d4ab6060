"""Write web/basemap.geojson: the offline basemap of the operator page (no tiles needed).

The page draws it under the vehicles always, so with `?tiles=off` or no internet the map still
shows where Nairobi, Mombasa and Kampala are, their main roads, the coast and Lake Victoria.
Nothing is downloaded: the roads are the simulator's road network (sim/roads.py, the roads the
demo vehicles drive on) and the outlines below are hand-made simplified polygons (a few km of
accuracy — context, not cartography).

    python scripts/make_basemap.py            # rewrites web/basemap.geojson
    python scripts/make_basemap.py --check    # exit 1 when the committed file is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.roads import ROADS  # noqa: E402 - the repo root must be on the path first

OUTPUT = ROOT / "web" / "basemap.geojson"

LatLng = tuple[float, float]

# Hand-drawn, simplified (lat, lng) rings; clockwise order does not matter to Leaflet.
# fmt: off
CITY_OUTLINES: dict[str, tuple[LatLng, ...]] = {
    "Nairobi": (
        (-1.160, 36.700), (-1.150, 36.800), (-1.160, 36.900), (-1.120, 36.990),
        (-1.180, 37.060), (-1.260, 37.080), (-1.330, 37.010), (-1.420, 36.960),
        (-1.440, 36.880), (-1.380, 36.800), (-1.350, 36.700), (-1.300, 36.650),
        (-1.220, 36.650),
    ),
    "Mombasa": (
        (-3.940, 39.700), (-3.960, 39.760), (-4.020, 39.740), (-4.060, 39.700),
        (-4.100, 39.680), (-4.130, 39.640), (-4.100, 39.600), (-4.040, 39.580),
        (-3.980, 39.600), (-3.950, 39.650),
    ),
    "Kampala": (
        (0.420, 32.520), (0.430, 32.590), (0.400, 32.660), (0.360, 32.700),
        (0.300, 32.690), (0.250, 32.640), (0.230, 32.570), (0.260, 32.510),
        (0.330, 32.490),
    ),
}
WATER: dict[str, tuple[LatLng, ...]] = {
    "Indian Ocean": (
        (-3.000, 40.200), (-3.500, 39.900), (-3.900, 39.780), (-4.000, 39.740),
        (-4.050, 39.700), (-4.300, 39.550), (-4.650, 39.300), (-5.000, 39.200),
        (-5.000, 41.000), (-3.000, 41.000),
    ),
    "Lake Victoria": (
        (-0.200, 32.100), (0.020, 32.400), (0.050, 32.520), (0.200, 32.600),
        (0.260, 32.640), (0.300, 32.700), (0.320, 32.900), (0.400, 33.100),
        (0.450, 33.200), (-0.500, 33.500), (-1.000, 33.000), (-0.500, 32.000),
    ),
}
# fmt: on


def _lnglat(points: tuple[LatLng, ...]) -> list[list[float]]:
    """GeoJSON order ([lng, lat]), rounded to ~10 m to keep the file small."""
    return [[round(lng, 4), round(lat, 4)] for lat, lng in points]


def _polygon(kind: str, name: str, ring: tuple[LatLng, ...]) -> dict[str, object]:
    coords = _lnglat(ring)
    coords.append(coords[0])  # GeoJSON rings are closed
    return {
        "type": "Feature",
        "properties": {"kind": kind, "name": name},
        "geometry": {"type": "Polygon", "coordinates": [coords]},
    }


def build() -> dict[str, object]:
    """The whole FeatureCollection: water first, then city outlines, then roads (draw order)."""
    features: list[dict[str, object]] = [
        _polygon("water", name, ring) for name, ring in WATER.items()
    ]
    features += [_polygon("city", name, ring) for name, ring in CITY_OUTLINES.items()]
    for city, roads in ROADS.items():
        for road in roads:
            features.append(
                {
                    "type": "Feature",
                    "properties": {"kind": "road", "name": road.name, "city": city},
                    "geometry": {"type": "LineString", "coordinates": _lnglat(road.points)},
                }
            )
    return {
        "type": "FeatureCollection",
        "source": "scripts/make_basemap.py (sim/roads.py roads, hand-made outlines)",
        "features": features,
    }


def render() -> str:
    return json.dumps(build(), separators=(",", ":")) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the file")
    args = parser.parse_args()
    text = render()
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            sys.stderr.write(f"{OUTPUT} is out of date: run python scripts/make_basemap.py\n")
            return 1
        return 0
    OUTPUT.write_text(text)
    sys.stdout.write(f"wrote {OUTPUT} ({len(text)} bytes)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
