"""LocationIQ-compatible geocoding of ticket clusters and locations, cached in the gazetteers.

`Geocoder.search()` does one rate-limited lookup with retries: 429 / 5xx / timeouts are
retried with capped exponential backoff and jitter (honouring Retry-After); 404 or an empty
list is "not found"; 401/403 raise `GeocoderFatalError` (bad key: stop the run); other 4xx
raise `GeocodeError` (that query is skipped and not cached). The key is never logged.

`geocode_clusters` / `geocode_locations` look up only names with no cache row (hits and misses
are both cached, so each name costs one request, ever) and apply the 25 km wrong-city guard
to locations: a hit further than 25 km from the ticket's cluster point (or, without one, its
region's city centre) is cached as `wrong_city` and not used.
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from psycopg_pool import ConnectionPool

from tickets_import import store

log = logging.getLogger(__name__)

WRONG_CITY_KM = 25.0
COUNTRY_CODES = "ke,ug"
# Cluster codes the geocoder cannot read (seed 003: QOA / PTMP are Quarry Road / Pipeline).
CLUSTER_ALIASES = {"QOA": "Quarry Road", "PTMP": "Pipeline"}
# Reference points when a ticket's cluster has no geocoded point yet.
CITY_CENTRES: dict[str, tuple[float, float]] = {
    "nairobi": (-1.2864, 36.8172),
    "mombasa": (-4.0435, 39.6682),
    "kampala": (0.3476, 32.5825),
    "kisumu": (-0.0917, 34.7680),
    "nakuru": (-0.3031, 36.0800),
    "eldoret": (0.5143, 35.2698),
}
# Network-plant words that name equipment, not places.
_PLANT_WORDS = r"FDH|FAT|FDT|ODB|ODF|OLT|ONT|MSAN|BTS|POP|CAB|NODE|SPLITTER|MDU|HUB"


class GeocodeError(Exception):
    """One lookup failed (not retriable or out of attempts); the name is not cached."""


class GeocoderFatalError(GeocodeError):
    """The geocoder refuses us (401/403: bad or exhausted key); stop geocoding."""


@dataclass(frozen=True)
class GeoHit:
    """The best match of one query."""

    lat: float
    lng: float
    display_name: str | None


@dataclass
class GeocodeStats:
    """What one geocoding pass did."""

    todo: int = 0
    requests: int = 0
    ok: int = 0
    not_found: int = 0
    wrong_city: int = 0
    failed: int = 0
    tickets_relocated: int = 0

    def line(self, what: str) -> str:
        """One-line summary for the log."""
        return (
            f"geocode {what}: todo={self.todo} requests={self.requests} ok={self.ok}"
            f" not_found={self.not_found} wrong_city={self.wrong_city} failed={self.failed}"
            f" tickets_relocated={self.tickets_relocated}"
        )


def clean_place_name(name: str) -> str:
    """A location name without network codes: bracketed codes, plant words (FDH, OLT …) and
    code-like tokens (`NRB-WL-045`, `OLT12`, `KLM_01`) are removed. '' when nothing is left."""
    text = re.sub(r"[\(\[\{][^\)\]\}]*[\)\]\}]", " ", name)
    text = re.sub(rf"\b(?:{_PLANT_WORDS})\b(?:[\s#-]*\d+[A-Za-z]?\b)?", " ", text)
    # Upper-case codes joined by - _ / (NRB-WL, KLM_01) and upper-case/digit tokens that
    # contain a digit (OLT12, 0234, A12B).
    text = re.sub(r"\b[A-Z0-9]+(?:[-_/][A-Z0-9]+)+\b", " ", text)
    text = re.sub(r"\b(?=[A-Z]*\d)[A-Z0-9]{2,}\b", " ", text)
    text = re.sub(r"\s*[-_/,;:|#]+\s*(?=[-_/,;:|#]|$)", " ", text)
    text = re.sub(r"\s+", " ", text).strip(" -_/,;:|#.")
    return text


def haversine_km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance in kilometres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(a))


class Geocoder:
    """A rate-limited, retrying client of a LocationIQ-compatible `/search` endpoint."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        rate_per_s: float = 1.0,
        max_attempts: int = 5,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 30.0,
        timeout_s: float = 15.0,
        country_codes: str = COUNTRY_CODES,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._url = base_url.rstrip("/") + "/search"
        self._key = key
        self._interval = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        self._max_attempts = max(1, max_attempts)
        self._base = backoff_base_s
        self._cap = backoff_cap_s
        self._countries = country_codes
        self._http = client or httpx.Client(timeout=timeout_s)
        self._own_client = client is None
        self._sleep = sleep
        self._next_at = 0.0
        self.requests = 0

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._own_client:
            self._http.close()

    def __enter__(self) -> Geocoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _throttle(self) -> None:
        now = time.monotonic()
        if now < self._next_at:
            self._sleep(self._next_at - now)
        self._next_at = max(now, self._next_at) + self._interval

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(self._cap, max(0.0, float(retry_after)))
            except ValueError:
                pass
        ceiling = min(self._cap, self._base * (2 ** (attempt - 1)))
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))

    def search(self, query: str) -> GeoHit | None:
        """The best match of `query`, or None when the geocoder finds nothing."""
        params = {"q": query, "key": self._key, "format": "json", "limit": "1"}
        if self._countries:
            params["countrycodes"] = self._countries
        last = ""
        for attempt in range(1, self._max_attempts + 1):
            self._throttle()
            self.requests += 1
            started = time.monotonic()
            retry_after: str | None = None
            try:
                response = self._http.get(self._url, params=params)
            except httpx.TimeoutException as exc:
                last = f"timeout ({type(exc).__name__})"
            except httpx.TransportError as exc:
                last = f"connection error ({type(exc).__name__})"
            else:
                elapsed = int((time.monotonic() - started) * 1000)
                status = response.status_code
                log.info("geocode q=%r -> HTTP %d in %dms", query, status, elapsed)
                if status == 200:
                    return _first_hit(response, query)
                if status == 404:
                    return None
                if status in (401, 403):
                    raise GeocoderFatalError(f"geocoder refused the key (HTTP {status})")
                if status != 429 and status < 500:
                    raise GeocodeError(f"geocoder HTTP {status} for {query!r}")
                last = f"HTTP {status}"
                retry_after = response.headers.get("retry-after")
            if attempt < self._max_attempts:
                delay = self._backoff(attempt, retry_after)
                log.warning(
                    "geocode q=%r: %s (attempt %d/%d), retrying in %.2fs",
                    query,
                    last,
                    attempt,
                    self._max_attempts,
                    delay,
                )
                self._sleep(delay)
        raise GeocodeError(
            f"geocoder gave up on {query!r} after {self._max_attempts} attempts: {last}"
        )


def _first_hit(response: httpx.Response, query: str) -> GeoHit | None:
    try:
        body: Any = response.json()
    except ValueError as exc:
        raise GeocodeError(f"geocoder reply for {query!r} is not JSON") from exc
    if not isinstance(body, list) or not body:
        return None
    first = body[0]
    if not isinstance(first, dict):
        return None
    try:
        lat, lng = float(first["lat"]), float(first["lon"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (-90 <= lat <= 90 and -180 <= lng <= 180):
        return None
    name = first.get("display_name")
    return GeoHit(lat, lng, str(name) if name is not None else None)


def _with_region(name: str, region: str | None) -> str:
    return f"{name}, {region.title()}" if region else name


def geocode_clusters(pool: ConnectionPool, geocoder: Geocoder, *, apply: bool) -> GeocodeStats:
    """Geocode clusters without a cache row; dry run (`apply=False`) only counts them."""
    stats = GeocodeStats()
    with pool.connection() as conn:
        todo = store.clusters_to_geocode(conn)
    stats.todo = len(todo)
    if not apply:
        return stats
    done: list[str] = []
    for item in todo:
        query = _with_region(CLUSTER_ALIASES.get(item.cluster.upper(), item.cluster), item.region)
        try:
            hit = geocoder.search(query)
        except GeocoderFatalError:
            raise
        except GeocodeError as exc:
            log.warning("cluster %r not geocoded: %s", item.cluster, exc)
            stats.failed += 1
            continue
        status = "ok" if hit else "not_found"
        stats.ok += hit is not None
        stats.not_found += hit is None
        with pool.connection() as conn:
            store.save_cluster(
                conn,
                item.cluster,
                query,
                status,
                hit.lat if hit else None,
                hit.lng if hit else None,
                hit.display_name if hit else None,
            )
        if hit:
            done.append(item.cluster)
    with pool.connection() as conn:
        stats.tickets_relocated = store.reresolve_geom(conn, done, [])
    stats.requests = geocoder.requests
    return stats


def geocode_locations(pool: ConnectionPool, geocoder: Geocoder, *, apply: bool) -> GeocodeStats:
    """Geocode actionable ticket locations without a cache row, with the wrong-city guard."""
    stats = GeocodeStats()
    with pool.connection() as conn:
        todo = store.locations_to_geocode(conn)
    stats.todo = len(todo)
    if not apply:
        return stats
    done: list[str] = []
    answers: dict[str, GeoHit | None] = {}  # one request per distinct query in a run
    for item in todo:
        cleaned = clean_place_name(item.location_name)
        query = _with_region(cleaned, item.region) if cleaned else ""
        hit: GeoHit | None = None
        if query:
            if query in answers:
                hit = answers[query]
            else:
                try:
                    hit = geocoder.search(query)
                except GeocoderFatalError:
                    raise
                except GeocodeError as exc:
                    log.warning("location %r not geocoded: %s", item.location_name, exc)
                    stats.failed += 1
                    continue
                answers[query] = hit
        status, distance = "not_found", None
        if hit is not None:
            ref = _reference_point(item)
            distance = haversine_km(ref[0], ref[1], hit.lat, hit.lng) if ref else None
            if distance is not None and distance > WRONG_CITY_KM:
                status = "wrong_city"
                log.warning(
                    "location %r -> %r is %.1f km from its cluster/city: rejected",
                    item.location_name,
                    hit.display_name,
                    distance,
                )
            else:
                status = "ok"
        stats.ok += status == "ok"
        stats.not_found += status == "not_found"
        stats.wrong_city += status == "wrong_city"
        with pool.connection() as conn:
            store.save_location(
                conn,
                item,
                query,
                status,
                hit.lat if hit else None,
                hit.lng if hit else None,
                hit.display_name if hit else None,
                None if distance is None else round(distance, 3),
            )
        if status == "ok":
            done.append(item.location_name)
    with pool.connection() as conn:
        stats.tickets_relocated = store.reresolve_geom(conn, [], done)
    stats.requests = geocoder.requests
    return stats


def _reference_point(item: store.LocationTodo) -> tuple[float, float] | None:
    if item.ref_lat is not None and item.ref_lng is not None:
        return item.ref_lat, item.ref_lng
    if item.region and item.region.lower() in CITY_CENTRES:
        return CITY_CENTRES[item.region.lower()]
    return None
