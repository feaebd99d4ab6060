"""The `reporting.v_trips` refresher of the read-API (FIX-D02).

Every `VTRIPS_REFRESH_INTERVAL_S` seconds each app instance tries to run
`REFRESH MATERIALIZED VIEW CONCURRENTLY reporting.v_trips`. Several uvicorn workers or
replicas refresh once per interval between them because a run
1. takes advisory lock 920145 with `pg_try_advisory_lock` (a busy lock = someone else is
   refreshing right now: skip), and
2. under the lock, skips when `reporting.refresh_log` shows a successful refresh less than
   0.9 x interval ago (so instances whose timers are out of phase do not refresh back to back).
Each refresh (success or failure) is one row of `reporting.refresh_log`, source
`dashboard_api`. REFRESH needs the view's owner: the refresher uses the read-write
`DATABASE_URL`, never the read-only dashboard connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Literal

import psycopg
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

REFRESH_LOCK_KEY = 920145  # the production key (seed 002 DATA_FLOW): keep it
VIEW_NAME = "reporting.v_trips"
SOURCE = "dashboard_api"
RECENT_FRACTION = 0.9

Outcome = Literal["refreshed", "failed", "locked", "recent"]


@dataclass(frozen=True)
class RefreshResult:
    """What one refresh attempt did."""

    outcome: Outcome
    duration_ms: int | None = None
    error: str | None = None


class VTripsRefresher:
    """Refreshes reporting.v_trips at most once per interval across all instances."""

    def __init__(
        self, pool: ConnectionPool, interval_s: float, *, instance: str | None = None
    ) -> None:
        self.pool = pool
        self.interval_s = interval_s
        self.instance = instance or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    def run_once(self) -> RefreshResult:
        """Attempt one refresh; raises psycopg.Error only when the database is unreachable."""
        with self.pool.connection() as conn:
            conn.autocommit = True
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (REFRESH_LOCK_KEY,)).fetchone()
            if not row or not row[0]:
                log.debug("v_trips refresh skipped: another instance holds the lock")
                return RefreshResult("locked")
            try:
                return self._refresh_locked(conn)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (REFRESH_LOCK_KEY,))

    def _refresh_locked(self, conn: psycopg.Connection[tuple[object, ...]]) -> RefreshResult:
        # Database clock, so replicas with skewed clocks agree on "recent".
        age_row = conn.execute(
            "SELECT extract(epoch FROM clock_timestamp() - max(finished_at))::float8"
            " FROM reporting.refresh_log WHERE object_name = %s AND ok",
            (VIEW_NAME,),
        ).fetchone()
        age = age_row[0] if age_row else None
        if isinstance(age, float) and age < self.interval_s * RECENT_FRACTION:
            log.debug("v_trips refresh skipped: last refresh %.1f s ago", age)
            return RefreshResult("recent")
        started_row = conn.execute("SELECT clock_timestamp()").fetchone()
        started_at = started_row[0] if started_row else None
        t0 = time.monotonic()
        error: str | None = None
        count: object = None
        try:
            conn.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {VIEW_NAME}")
            count_row = conn.execute(f"SELECT count(*) FROM {VIEW_NAME}").fetchone()
            count = count_row[0] if count_row else None
        except psycopg.Error as exc:
            if conn.broken:
                raise  # connection lost: nothing can be logged; the loop reports it
            error = str(exc).strip() or type(exc).__name__
        duration_ms = int((time.monotonic() - t0) * 1000)
        conn.execute(
            "INSERT INTO reporting.refresh_log (object_name, source, instance, started_at,"
            " duration_ms, ok, row_count, error) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                VIEW_NAME,
                SOURCE,
                self.instance,
                started_at,
                duration_ms,
                error is None,
                count,
                error,
            ),
        )
        if error is not None:
            log.error("v_trips refresh failed after %d ms: %s", duration_ms, error)
            return RefreshResult("failed", duration_ms, error)
        log.info("v_trips refreshed in %d ms (%s rows)", duration_ms, count)
        return RefreshResult("refreshed", duration_ms)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Attempt a refresh now and then every interval until `stop` is set."""
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.run_once)
            except Exception:  # the loop must survive a database outage
                log.exception("v_trips refresh attempt failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
