"""Pure parsing of geofence GeoJSON (no I/O): a Feature or FeatureCollection → `FenceRow`s.

Hostile input costs a `GeofenceError` with one sentence, never a crash:
- the body is at most `MAX_BODY_BYTES`, UTF-8, JSON nested at most `MAX_JSON_DEPTH` deep
  (checked without recursion before `json.loads` sees it), at most `MAX_FEATURES` features;
- geometry is a Polygon, MultiPolygon, or a Point with a `radius_m` property (a circle);
- every position is two or three finite numbers with longitude in [-180, 180] and latitude in
  [-90, 90]; rings are closed with at least 4 positions; at most `max_vertices` positions;
- `name` (1-200 characters) and `kind` (one of `KINDS`) are required; `cost_centre` and `city`
  are optional text; no control characters anywhere in them.
Self-intersection and other topology faults are checked by PostGIS (`ST_IsValidReason`) when
the rows are written (geofences/store.py): the loader refuses them, it never repairs them.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from typing import Any

from ts_shared import json_too_deep

KINDS = ("depot", "customer_site", "city_zone", "region", "no_go")
MAX_BODY_BYTES = 4_194_304  # a country outline at 10,000 vertices is ~0.3 MB
MAX_JSON_DEPTH = 8  # FeatureCollection > features > Feature > geometry > MultiPolygon: 7
MAX_FEATURES = 1_000
MAX_TEXT_LEN = 200
MAX_RADIUS_M = 100_000.0
_BAD_CHAR = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_KNOWN_PROPS = {"name", "kind", "cost_centre", "city", "radius_m"}


class GeofenceError(ValueError):
    """The GeoJSON is malformed or not an acceptable geofence (HTTP 422 / CLI exit 2)."""

    status_code = 422


class BodyTooLargeError(GeofenceError):
    """The body is larger than MAX_BODY_BYTES (HTTP 413)."""

    status_code = 413


@dataclass(frozen=True)
class FenceRow:
    """One geofence ready to write: `geometry` is GeoJSON text (Polygon/MultiPolygon), or
    None for a circle (`center` [lng, lat] + `radius_m`, buffered by PostGIS)."""

    name: str
    kind: str
    cost_centre: str | None
    city: str | None
    geometry: str | None
    center: tuple[float, float] | None = None
    radius_m: float | None = None
    properties: dict[str, Any] = field(default_factory=dict)


def parse_body(body: bytes, *, max_vertices: int) -> list[FenceRow]:
    """Bytes of a Feature or FeatureCollection → rows (see the module doc for the limits)."""
    if len(body) > MAX_BODY_BYTES:
        raise BodyTooLargeError(f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GeofenceError(f"the body is not UTF-8 text (invalid byte at {exc.start})") from None
    return parse_text(text, max_vertices=max_vertices)


def parse_text(text: str, *, max_vertices: int) -> list[FenceRow]:
    """GeoJSON text → rows; GeofenceError naming the first problem found."""
    _check_depth(text)
    try:
        doc = json.loads(text, parse_constant=_no_constant)
    except GeofenceError:
        raise
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
        why = f": {exc.msg} at {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
        raise GeofenceError(f"the body is not valid JSON{why}") from None
    features = _features(doc)
    rows = [_feature(i, f, max_vertices) for i, f in enumerate(features)]
    names = [r.name.lower() for r in rows]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise GeofenceError(f"the name {dup!r} appears more than once in the body")
    return rows


def _no_constant(name: str) -> float:
    raise GeofenceError(f"{name} is not a number GeoJSON allows")


def _check_depth(text: str) -> None:
    """GeofenceError when brackets outside strings nest deeper than MAX_JSON_DEPTH."""
    if json_too_deep(text, MAX_JSON_DEPTH):
        raise GeofenceError(f"the JSON is nested too deeply (more than {MAX_JSON_DEPTH})")


def _features(doc: object) -> list[object]:
    if not isinstance(doc, dict):
        raise GeofenceError("the body must be a GeoJSON Feature or FeatureCollection object")
    kind = doc.get("type")
    if kind == "Feature":
        return [doc]
    if kind != "FeatureCollection":
        raise GeofenceError(f"type must be Feature or FeatureCollection (got {_shown(kind)})")
    features = doc.get("features")
    if not isinstance(features, list) or not features:
        raise GeofenceError("a FeatureCollection needs a non-empty features array")
    if len(features) > MAX_FEATURES:
        raise GeofenceError(f"at most {MAX_FEATURES} features per body (got {len(features)})")
    return features


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def _text(where: str, props: dict[str, Any], key: str, *, required: bool) -> str | None:
    value = props.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise GeofenceError(f"{where}: properties.{key} is required")
        return None
    if not isinstance(value, str):
        raise GeofenceError(f"{where}: properties.{key} must be text")
    text = value.strip()
    if len(text) > MAX_TEXT_LEN:
        raise GeofenceError(f"{where}: properties.{key} is longer than {MAX_TEXT_LEN} characters")
    if _BAD_CHAR.search(text):
        raise GeofenceError(f"{where}: properties.{key} contains a control character")
    return text


def _feature(index: int, feature: object, max_vertices: int) -> FenceRow:
    where = f"feature {index}"
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise GeofenceError(f"{where} is not a GeoJSON Feature")
    props = feature.get("properties")
    if not isinstance(props, dict):
        raise GeofenceError(f"{where}: properties must be an object with name and kind")
    name = _text(where, props, "name", required=True)
    assert name is not None
    where = f"feature {index} ({name!r})"
    kind = (_text(where, props, "kind", required=True) or "").lower()
    if kind not in KINDS:
        raise GeofenceError(f"{where}: kind must be one of {', '.join(KINDS)} (got {kind!r})")
    extra = {k: v for k, v in props.items() if k not in _KNOWN_PROPS}
    _check_extra(where, extra)
    base = FenceRow(
        name=name,
        kind=kind,
        cost_centre=_text(where, props, "cost_centre", required=False),
        city=_text(where, props, "city", required=False),
        geometry=None,
        properties=extra,
    )
    geometry = feature.get("geometry")
    if not isinstance(geometry, dict):
        raise GeofenceError(f"{where}: geometry must be a Polygon, MultiPolygon or Point")
    gtype = geometry.get("type")
    coords = geometry.get("coordinates")
    if gtype == "Point":
        lng, lat = _position(where, coords)
        radius = _radius(where, props.get("radius_m"))
        return replace(base, center=(lng, lat), radius_m=radius)
    if gtype == "Polygon":
        polygons = [coords]
    elif gtype == "MultiPolygon":
        if not isinstance(coords, list) or not coords:
            raise GeofenceError(f"{where}: a MultiPolygon needs a non-empty list of polygons")
        polygons = coords
    else:
        raise GeofenceError(
            f"{where}: geometry type must be Polygon, MultiPolygon or Point (got {_shown(gtype)})"
        )
    vertices = sum(_polygon(where, p) for p in polygons)
    if vertices > max_vertices:
        raise GeofenceError(f"{where}: {vertices} vertices, more than the {max_vertices} allowed")
    clean = {"type": gtype, "coordinates": coords}
    return replace(base, geometry=json.dumps(clean, separators=(",", ":")))


def _check_extra(where: str, extra: dict[str, Any]) -> None:
    """Other properties are kept as given, within reason (size checked by the body limit)."""
    if len(extra) > 50:
        raise GeofenceError(f"{where}: at most 50 properties besides name/kind/cost_centre/city")
    for key in extra:
        if len(key) > MAX_TEXT_LEN or _BAD_CHAR.search(key):
            raise GeofenceError(f"{where}: property name {_shown(key)} is not acceptable")


def _radius(where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GeofenceError(f"{where}: a Point geofence needs a numeric properties.radius_m")
    radius = _finite(value)
    if radius is None or not 0 < radius <= MAX_RADIUS_M:
        raise GeofenceError(f"{where}: radius_m must be above 0 and at most {MAX_RADIUS_M:.0f}")
    return radius


def _finite(value: object) -> float | None:
    """`value` as a finite float; None for anything else (bool, text, inf, a 400-digit int)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _position(where: str, pos: object) -> tuple[float, float]:
    if not isinstance(pos, list) or len(pos) not in (2, 3):
        raise GeofenceError(f"{where}: a position must be [longitude, latitude]")
    numbers = [_finite(n) for n in pos]
    if any(n is None for n in numbers):
        raise GeofenceError(f"{where}: coordinates must be finite numbers")
    lng, lat = float(pos[0]), float(pos[1])
    if not (-180.0 <= lng <= 180.0 and -90.0 <= lat <= 90.0):
        raise GeofenceError(
            f"{where}: position [{lng}, {lat}] is out of range"
            " (longitude -180..180, latitude -90..90, in that order)"
        )
    return lng, lat


def _polygon(where: str, rings: object) -> int:
    """Check one polygon's rings; returns its number of positions."""
    if not isinstance(rings, list) or not rings:
        raise GeofenceError(f"{where}: a polygon needs at least one ring")
    total = 0
    for ring in rings:
        if not isinstance(ring, list) or len(ring) < 4:
            raise GeofenceError(f"{where}: a ring needs at least 4 positions")
        points = [_position(where, pos) for pos in ring]
        if points[0] != points[-1]:
            raise GeofenceError(f"{where}: a ring must end where it starts (closed)")
        total += len(points)
    return total
