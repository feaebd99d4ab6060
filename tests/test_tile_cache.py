"""The read-API's cache of rendered trips tiles (dashboard/tile_cache.py, dashboard/tiles.py).

- TileCache itself: least recently used tiles go first when the bytes run out, an entry lives
  its ttl, a build that fails is not kept, concurrent requests for one missing tile build it
  once, `fresh` builds anew, size 0 is off; Every reads at most once per period.
- Through the read-API on the real database: a second request for a trips tile is answered
  from the cache (the database changed in between: the old tile comes back), a request with
  `Cache-Control: no-cache` builds it anew, a logged refresh of reporting.v_trips retires
  every cached trips tile, live tiles are never cached, DASHBOARD_TILE_CACHE_MB=0 turns it off.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from dashboard.tile_cache import Every, TileCache
from dashboard_api import create_app
from tests.conftest import test_settings
from tests.factories import Fleet
from tests.test_tiles import fleet, tile_of  # noqa: F401  (fleet: a fixture)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ── TileCache and Every ─────────────────────────────────────────────────────────────────────


def test_least_recently_used_tiles_go_first_when_the_bytes_run_out() -> None:
    cache = TileCache(10)
    cache.put("a", b"aaaa", 60)
    cache.put("b", b"bbbb", 60)
    assert cache.get("a") == b"aaaa"  # a is now the most recently used
    cache.put("c", b"cccc", 60)  # 12 bytes > 10: b goes
    assert cache.get("b") is None
    assert cache.get("a") == b"aaaa" and cache.get("c") == b"cccc"
    cache.put("big", b"x" * 11, 60)  # larger than the whole cache: not kept, nothing evicted
    assert cache.get("big") is None and cache.get("a") == b"aaaa"
    cache.put("a", b"AA", 60)  # replaced: its old bytes are given back
    stats = cache.stats()
    assert (stats.entries, stats.bytes, stats.max_bytes) == (2, 6, 10)


def test_an_entry_lives_its_ttl() -> None:
    clock = Clock()
    cache = TileCache(100, clock=clock)
    cache.put("t", b"tile", 15)
    clock.now += 14.9
    assert cache.get("t") == b"tile"
    clock.now += 0.1
    assert cache.get("t") is None
    assert cache.stats().bytes == 0
    cache.put("never", b"x", 0)  # a tile a browser may not keep is not kept here either
    assert cache.get("never") is None


def test_get_or_build_keeps_what_it_built_fresh_rebuilds_and_failures_are_not_kept() -> None:
    cache = TileCache(100)
    builds: list[int] = []

    def build() -> bytes:
        builds.append(1)
        return b"v%d" % len(builds)

    assert cache.get_or_build("k", 60, build) == b"v1"
    assert cache.get_or_build("k", 60, build) == b"v1"
    assert cache.get_or_build("k", 60, build, fresh=True) == b"v2"  # a reload
    assert cache.get_or_build("k", 60, build) == b"v2"
    assert len(builds) == 2
    stats = cache.stats()
    assert (stats.hits, stats.misses) == (2, 2)

    def broken() -> bytes:
        raise RuntimeError("database gone")

    with pytest.raises(RuntimeError):
        cache.get_or_build("other", 60, broken)
    assert cache.get_or_build("other", 60, build) == b"v3"  # the failure was not kept

    off = TileCache(0)
    assert not off.enabled
    assert off.get_or_build("k", 60, build) == b"v4"
    assert off.get_or_build("k", 60, build) == b"v5"


def test_requests_for_one_missing_tile_build_it_once() -> None:
    cache = TileCache(1000)
    calls: list[int] = []
    start = threading.Barrier(8)
    got: list[bytes] = []

    def build() -> bytes:
        calls.append(1)
        time.sleep(0.3)  # the others arrive while it builds
        return b"tile"

    def ask() -> None:
        start.wait()
        got.append(cache.get_or_build(("trips", 5), 60, build))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert got == [b"tile"] * 8
    assert len(calls) == 1


def test_every_reads_at_most_once_per_period() -> None:
    clock = Clock()
    reads: list[int] = []

    def read() -> int:
        reads.append(1)
        return len(reads)

    every = Every(read, period_s=1.0, clock=clock)
    assert every() == 1
    clock.now += 0.9
    assert every() == 1
    clock.now += 0.1
    assert every() == 2
    assert len(reads) == 2


# ── Through the read-API ────────────────────────────────────────────────────────────────────

NAIROBI = (36.82, -1.29)


def _client(db_url: str, cache_mb: int) -> Iterator[TestClient]:
    settings = test_settings(db_url, vtrips_refresh_interval_s=0, dashboard_tile_cache_mb=cache_mb)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def client(db_url: str, fleet: Fleet) -> Iterator[TestClient]:  # noqa: F811
    yield from _client(db_url, cache_mb=8)


def _trips_tile_url(z: int = 5) -> str:
    x, y = tile_of(*NAIROBI, z)
    return f"/tiles/trips/{z}/{x}/{y}.mvt"


def _move_nairobi_trips(db_url: str, log_refresh: bool) -> None:
    """Change the trips around Nairobi and refresh reporting.v_trips (logged or not)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        changed = conn.execute(
            "UPDATE tracksolid.trips SET end_lat = end_lat + 0.5, end_lng = end_lng + 0.5"
            " WHERE start_lng BETWEEN 36 AND 38 AND end_lat IS NOT NULL"
        ).rowcount
        assert changed > 0
        conn.execute("REFRESH MATERIALIZED VIEW reporting.v_trips")
        if log_refresh:
            conn.execute(
                "INSERT INTO reporting.refresh_log (object_name, source, started_at, ok)"
                " VALUES ('reporting.v_trips', 'manual', clock_timestamp(), true)"
            )


def test_a_trips_tile_is_served_from_the_cache_until_v_trips_is_refreshed(
    client: TestClient, db_url: str
) -> None:
    url = _trips_tile_url()
    first = client.get(url)
    assert first.status_code == 200
    _move_nairobi_trips(db_url, log_refresh=False)  # as if refreshed by hand, not logged
    again = client.get(url)
    assert again.content == first.content, "the kept tile (the database changed since)"
    assert again.headers["etag"] == first.headers["etag"]
    assert again.headers["cache-control"] == "private, max-age=15"
    reload = client.get(url, headers={"Cache-Control": "no-cache"})
    assert reload.content != first.content, "a reload builds the tile anew"
    moved = reload.content
    _move_nairobi_trips(db_url, log_refresh=True)  # the refresher's log: every tile retires
    time.sleep(1.1)  # the newest refresh is read at most once a second
    after = client.get(url)
    assert after.content not in (first.content, moved)
    stats = client.app.state.trips_tiles.cache.stats()  # type: ignore[attr-defined]
    assert stats.hits == 1 and stats.entries >= 1


def test_other_filters_and_windows_are_other_tiles(client: TestClient) -> None:
    url = _trips_tile_url()
    everything = client.get(url)
    one_centre = client.get(url, params={"cost_centre": "Nairobi-North"})
    other_window = client.get(url, params={"start": "2020-01-01", "end": "2020-01-02"})
    assert other_window.status_code == 204  # no trips then: not the cached week
    assert one_centre.status_code in (200, 204)
    assert one_centre.content != everything.content or one_centre.status_code == 204
    past = client.get(url, params={"start": "2020-01-01", "end": "2020-01-02"})
    assert past.headers["cache-control"] == "private, max-age=600"
    stats = client.app.state.trips_tiles.cache.stats()  # type: ignore[attr-defined]
    assert (stats.misses, stats.hits) == (3, 1)


def test_live_tiles_are_never_cached(client: TestClient, db_url: str) -> None:
    x, y = tile_of(*NAIROBI, 5)
    url = f"/tiles/live/5/{x}/{y}.mvt"
    first = client.get(url)
    assert first.status_code == 200
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE tracksolid.live_positions SET speed_kmh = speed_kmh + 7")
    assert client.get(url).content != first.content
    assert getattr(client.app.state, "trips_tiles", None) is None  # type: ignore[attr-defined]


@pytest.mark.usefixtures("fleet")
def test_size_zero_turns_the_cache_off(db_url: str) -> None:
    url = _trips_tile_url()
    for client in _client(db_url, cache_mb=0):
        first = client.get(url)
        _move_nairobi_trips(db_url, log_refresh=False)
        assert client.get(url).content != first.content


def test_after_a_refresh_the_tiles_asked_for_most_are_built_again_in_the_background(
    client: TestClient, db_url: str
) -> None:
    """The first trips tile request after a logged refresh starts the warm-up: the tiles asked
    for at least twice before it are built again (with the new data) before anyone asks; a
    tile asked for once is not."""
    usual = [_trips_tile_url(5), _trips_tile_url(6)]
    once = _trips_tile_url(7)
    for url in usual * 2 + [once]:
        assert client.get(url).status_code == 200
    _move_nairobi_trips(db_url, log_refresh=True)
    time.sleep(1.1)  # the newest refresh is read at most once a second
    trips = client.app.state.trips_tiles  # type: ignore[attr-defined]
    assert client.get(once).status_code == 200  # the first request after the refresh
    deadline = time.monotonic() + 15
    while trips.warmed < 2:
        assert time.monotonic() < deadline, "the usual tiles were not built again"
        time.sleep(0.05)
    before = trips.cache.stats()
    for url in usual:
        served = client.get(url)
        assert served.content == client.get(url, headers={"Cache-Control": "no-cache"}).content
    after = trips.cache.stats()
    assert after.hits - before.hits == 2, "both usual tiles were ready, with the new data"
    assert trips.warmed == 2
