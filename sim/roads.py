"""Model: geometry (great-circle distance, bearings) and the cities' road polylines."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

EARTH_RADIUS_M = 6_371_008.8

LatLng = tuple[float, float]


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def _bearing(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Initial compass bearing in degrees [0, 360) from point 1 to point 2."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lng2 - lng1)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360


class Road:
    """A road polyline starting at its city's hub, parametrised by arc length in metres."""

    def __init__(self, name: str, city: str, points: Sequence[LatLng]) -> None:
        self.name = name
        self.city = city
        self.points = tuple(points)
        cum = [0.0]
        bearings = []
        for (la0, ln0), (la1, ln1) in zip(self.points, self.points[1:], strict=False):
            cum.append(cum[-1] + haversine_m(la0, ln0, la1, ln1))
            bearings.append(_bearing(la0, ln0, la1, ln1))
        self.cum = tuple(cum)
        self.bearings = tuple(bearings)
        self.length = cum[-1]

    def at(self, s: float) -> tuple[float, float, float]:
        """(lat, lng, bearing away from the hub) at arc length `s` (clamped)."""
        s = min(max(s, 0.0), self.length)
        i = min(bisect.bisect_right(self.cum, s) - 1, len(self.points) - 2)
        (la0, ln0), (la1, ln1) = self.points[i], self.points[i + 1]
        seg = self.cum[i + 1] - self.cum[i]
        f = (s - self.cum[i]) / seg if seg > 0 else 0.0
        return la0 + (la1 - la0) * f, ln0 + (ln1 - ln0) * f, self.bearings[i]


# fmt: off
_ROAD_WAYPOINTS: dict[str, tuple[tuple[str, tuple[LatLng, ...]], ...]] = {
    "Nairobi": (
        ("Mombasa Road", (
            (-1.28640, 36.81720), (-1.29250, 36.82250), (-1.30300, 36.82550),
            (-1.31200, 36.83300), (-1.31850, 36.83950), (-1.32550, 36.85200),
            (-1.33300, 36.86900), (-1.33950, 36.88400), (-1.34800, 36.90200),
            (-1.36100, 36.91600), (-1.37800, 36.92800), (-1.39200, 36.93800),
            (-1.41500, 36.95500), (-1.43800, 36.97000))),
        ("Thika Road", (
            (-1.28640, 36.81720), (-1.27900, 36.82300), (-1.26900, 36.83800),
            (-1.25700, 36.84800), (-1.24400, 36.86200), (-1.23100, 36.87600),
            (-1.21900, 36.88800), (-1.19900, 36.91300), (-1.18400, 36.93000),
            (-1.16500, 36.94600), (-1.14600, 36.96000), (-1.12500, 36.98900),
            (-1.10300, 37.01400))),
        ("Waiyaki Way", (
            (-1.28640, 36.81720), (-1.27600, 36.81300), (-1.26600, 36.80400),
            (-1.26200, 36.79000), (-1.26000, 36.77900), (-1.25800, 36.76300),
            (-1.25800, 36.74800), (-1.26000, 36.73200), (-1.25900, 36.71800),
            (-1.25500, 36.69500), (-1.24600, 36.66500))),
        ("Ngong Road", (
            (-1.28640, 36.81720), (-1.29000, 36.81200), (-1.29700, 36.80300),
            (-1.29900, 36.79200), (-1.30000, 36.78000), (-1.29800, 36.76200),
            (-1.29900, 36.75300), (-1.30800, 36.73500), (-1.32000, 36.71000),
            (-1.33800, 36.68500), (-1.36200, 36.65800))),
        ("Jogoo Road", (
            (-1.28640, 36.81720), (-1.28900, 36.83000), (-1.29300, 36.84500),
            (-1.29500, 36.86000), (-1.29000, 36.87800), (-1.28500, 36.89500),
            (-1.28000, 36.91500), (-1.27700, 36.93500))),
    ),
    "Mombasa": (
        ("Moi Avenue / Nairobi Road", (
            (-4.06240, 39.67180), (-4.05900, 39.66700), (-4.05300, 39.66200),
            (-4.04500, 39.65800), (-4.03500, 39.64600), (-4.02300, 39.62800),
            (-4.01200, 39.61000), (-3.99800, 39.59000), (-3.98300, 39.57000))),
        ("Nyali Bridge / Links Road", (
            (-4.06240, 39.67180), (-4.05200, 39.67700), (-4.04300, 39.68800),
            (-4.03300, 39.70000), (-4.02500, 39.71000), (-4.01500, 39.72000),
            (-3.99500, 39.72500), (-3.97200, 39.73300), (-3.94500, 39.74300))),
        ("Likoni Road", (
            (-4.06240, 39.67180), (-4.06800, 39.66700), (-4.07600, 39.66000),
            (-4.08600, 39.66100), (-4.10000, 39.65000), (-4.12500, 39.63000),
            (-4.15000, 39.61000), (-4.18500, 39.58500), (-4.22000, 39.56000))),
    ),
    "Kampala": (
        ("Entebbe Road", (
            (0.31360, 32.58110), (0.30400, 32.58000), (0.29300, 32.57800),
            (0.28300, 32.57600), (0.26400, 32.57400), (0.23700, 32.56200),
            (0.21500, 32.55700), (0.18000, 32.54200), (0.15000, 32.53200),
            (0.12700, 32.51900), (0.09500, 32.49800), (0.06400, 32.47400))),
        ("Jinja Road", (
            (0.31360, 32.58110), (0.31500, 32.59500), (0.32000, 32.61500),
            (0.32900, 32.63500), (0.33800, 32.65800), (0.34800, 32.68500),
            (0.35600, 32.71500), (0.36000, 32.74000))),
        ("Bombo Road", (
            (0.31360, 32.58110), (0.32300, 32.57500), (0.34000, 32.56800),
            (0.36000, 32.56500), (0.38000, 32.56200), (0.40000, 32.55900),
            (0.42000, 32.55500))),
    ),
}
# fmt: on

ROADS: dict[str, tuple[Road, ...]] = {
    city: tuple(Road(name, city, pts) for name, pts in roads)
    for city, roads in _ROAD_WAYPOINTS.items()
}
_CITY_COUNTRY = {"Nairobi": "KE", "Mombasa": "KE", "Kampala": "UG"}
_CITY_ALTITUDE_M = {"Nairobi": 1660, "Mombasa": 30, "Kampala": 1190}
