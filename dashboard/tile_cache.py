"""In-memory cache of rendered trips tiles (issue #19).

Why: a trips tile of a busy area takes 50-150 ms to build in PostGIS (a week of 1,000
vehicles: tens of thousands of trips read, grouped and encoded; docs/performance.md "Vector
tiles"), and every operator looking at the same map asks for the same tiles. A trips tile
is a function of its filters, its window and the content of `reporting.v_trips`, which
changes only when the view is refreshed: the key carries the newest successful refresh in
`reporting.refresh_log` (read at most once a second), so a refresh retires every kept tile.
Kept at most 600 s for a window wholly in the past (its `Cache-Control: max-age`) and 300 s
for a window reaching now (dashboard/tiles.py TRIPS_KEEP_S: the only change between two
refreshes is the window's start edge sliding; a trip that started just over 7 days ago may
stay on such a tile up to that long). A refresh done by hand without a log row is seen when
the tile's time is up.

- Per read-API process (each uvicorn worker its own), bounded by `DASHBOARD_TILE_CACHE_MB`
  (least recently used tiles go first; `0` turns the cache off).
- Requests for the same missing tile that arrive together build it once: the others wait for
  that build ("single flight"); a build that fails is not kept (each waiter then builds).
- A request with `Cache-Control: no-cache` (a browser's reload) builds the tile anew.
- After a refresh the tiles asked for most are built again in the background (the warm-up:
  dashboard/tiles.py TripsTiles).
- Only trips tiles: live tiles change with every fix, a track belongs to one operator's view.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class CacheStats:
    """The cache's size and counters since the process started."""

    entries: int
    bytes: int
    max_bytes: int
    hits: int
    misses: int


class TileCache:
    """A byte-bounded LRU of tile bodies with a lifetime per entry (thread-safe: FastAPI runs
    the tile endpoint in its thread pool)."""

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max(0, max_bytes)
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._building: dict[Hashable, threading.Lock] = {}
        self._hits = 0
        self._misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                len(self._entries), self._bytes, self.max_bytes, self._hits, self._misses
            )

    def get(self, key: Hashable) -> bytes | None:
        """The body kept for `key` while it lives (counted as a hit), else None."""
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            body, expires = found
            if self._clock() >= expires:
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return body

    def put(self, key: Hashable, body: bytes, ttl_s: float) -> None:
        """Keep `body` for `ttl_s` seconds (a body larger than the whole cache is not kept)."""
        if ttl_s <= 0 or len(body) > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                self._drop(key)
            self._entries[key] = (body, self._clock() + ttl_s)
            self._bytes += len(body)
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def get_or_build(
        self, key: Hashable, ttl_s: float, build: Callable[[], bytes], *, fresh: bool = False
    ) -> bytes:
        """The kept body of `key`, or `build()` kept for `ttl_s` s; `fresh` always builds."""
        if not self.enabled:
            return build()
        if not fresh and (body := self.get(key)) is not None:
            return body
        with self._lock:
            building = self._building.setdefault(key, threading.Lock())
        try:
            with building:  # one build per key at a time; the waiters then find its result
                if not fresh and (body := self.get(key)) is not None:
                    return body
                with self._lock:
                    self._misses += 1
                body = build()
                self.put(key, body, ttl_s)
                return body
        finally:
            with self._lock:
                if self._building.get(key) is building and not building.locked():
                    del self._building[key]

    def _drop(self, key: Hashable) -> None:
        body, _ = self._entries.pop(key)
        self._bytes -= len(body)


class Every:
    """The value of `read()`, read again at most once per `period_s` (shared by threads)."""

    def __init__(
        self,
        read: Callable[[], Hashable],
        period_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._period = period_s
        self._clock = clock
        self._lock = threading.Lock()
        self._value: Hashable = None
        self._at = float("-inf")

    def __call__(self) -> Hashable:
        with self._lock:
            if self._clock() - self._at < self._period:
                return self._value
        value = self._read()  # outside the lock: a slow read does not hold other threads
        with self._lock:
            self._value, self._at = value, self._clock()
        return value
