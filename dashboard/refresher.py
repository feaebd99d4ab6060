"""The `reporting.v_trips` refresher of the read-API (FIX-D02).

Every `VTRIPS_REFRESH_INTERVAL_S` seconds each app instance tries to run
`REFRESH MATERIALIZED VIEW CONCURRENTLY reporting.v_trips`. Several uvicorn workers or
replicas refresh once per interval between them because a run
1. takes advisory lock 920145 with `pg_try_advisory_lock` (a busy lock = someone else is
   refreshing right now: skip), and
2. under the lock, skips when `reporting.refresh_log` shows a successful refresh less than
   0.9 x interval ago (so instances whose timers are out of phase do not refresh back to back).
Each refresh (success or failure) is one row of `reporting.refresh_log`, source
`dashboard_api` (or `ingest_worker` for the worker's `vtrips_refresh` job). REFRESH needs the
view's owner: the refresher uses the read-write `DATABASE_URL`, never the read-only dashboard
connection.

Where it runs (issue #19, read replicas): the ingest worker's `vtrips_refresh` job always
refreshes (ingest/vtrips.py); the read-API refreshes too only when it can write — its read
database is not a hot standby and `DATABASE_URL` is writable and owns the view — decided at
start by `decide_placement` and run by `RefresherHost`. `/health` reports the decision.
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

from ts_shared import Settings, make_pool

log = logging.getLogger(__name__)

REFRESH_LOCK_KEY = 920145  # the production key (seed 002 DATA_FLOW): keep it
VIEW_NAME = "reporting.v_trips"
SOURCE = "dashboard_api"
RECENT_FRACTION = 0.9

Outcome = Literal["refreshed", "failed", "locked", "recent"]
# here: this read-API refreshes; worker: it does not (the ingest worker's job does);
# off: VTRIPS_REFRESH_INTERVAL_S=0; pending: the databases have not answered yet.
Placement = Literal["here", "worker", "off", "pending"]
PROBE_TIMEOUT_S = 5
RETRY_DECISION_S = 10.0


@dataclass(frozen=True)
class RefreshResult:
    """What one refresh attempt did."""

    outcome: Outcome
    duration_ms: int | None = None
    error: str | None = None


class VTripsRefresher:
    """Refreshes reporting.v_trips at most once per interval across all instances."""

    def __init__(
        self,
        pool: ConnectionPool,
        interval_s: float,
        *,
        instance: str | None = None,
        source: str = SOURCE,
    ) -> None:
        self.pool = pool
        self.interval_s = interval_s
        self.source = source
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
                self.source,
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


# ── Where the refresher runs (issue #19) ─────────────────────────────────────────────────────

# The refreshing connection must be able to write and to REFRESH (owner or member of the
# owner's role); a missing view (migrations not yet run) counts as refreshable: the run says.
_PROBE_WRITE_SQL = (
    "SELECT pg_is_in_recovery(), current_setting('transaction_read_only') = 'on',"
    " coalesce((SELECT pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_class c"
    "  WHERE c.oid = to_regclass('reporting.v_trips')), true)"
)


def _probe(conninfo: str, query: str) -> tuple[object, ...]:
    """One row of `query` on a short-lived connection (not a pool: a read-API on a replica
    should hold no connection to the primary it will never use)."""
    with psycopg.connect(
        conninfo, connect_timeout=PROBE_TIMEOUT_S, application_name="dashboard_api_probe"
    ) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return tuple(row)


def decide_placement(settings: Settings) -> tuple[Placement, str]:
    """Where the read-API's refresher runs, and why (one sentence for /health and the log).

    Raises psycopg.Error when a database it must ask does not answer."""
    if settings.vtrips_refresh_interval_s == 0:
        return "off", "VTRIPS_REFRESH_INTERVAL_S=0: nobody refreshes reporting.v_trips"
    if settings.dashboard_vtrips_refresher == "off":
        return "worker", "DASHBOARD_VTRIPS_REFRESHER=off: the ingest worker refreshes"
    (in_recovery,) = _probe(settings.dashboard_dsn(), "SELECT pg_is_in_recovery()")
    if in_recovery:
        return "worker", "the read database is a hot standby: the ingest worker refreshes"
    standby, read_only, owner = _probe(settings.dsn(), _PROBE_WRITE_SQL)
    if standby or read_only:
        return "worker", "DATABASE_URL is read-only: the ingest worker refreshes"
    if not owner:
        return "worker", "DATABASE_URL's role does not own reporting.v_trips: the worker refreshes"
    return "here", "the database is writable: this read-API refreshes (and the worker)"


class RefresherHost:
    """The read-API's side of the refresher: decides at start where `reporting.v_trips` is
    refreshed (`placement`, `reason`) and, when here, runs a VTripsRefresher on its own
    one-connection pool. A database that does not answer at start is asked again every
    RETRY_DECISION_S in the background (placement `pending` meanwhile), so the API still
    starts (and answers /health with 503) while the database is down."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.placement: Placement = "pending"
        self.reason = "the databases have not answered yet"
        self.refresher: VTripsRefresher | None = None
        self._pool: ConnectionPool | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        """Decide now if the databases answer; run the refresher loop when it is here."""
        decided = await self._try_decide()
        if not decided or self.placement == "here":
            self._task = asyncio.create_task(self._run(), name="v_trips_refresher")

    async def _try_decide(self) -> bool:
        try:
            self.placement, self.reason = await asyncio.to_thread(decide_placement, self.settings)
        except psycopg.Error as exc:
            log.warning(
                "v_trips refresher: database not answering (%s); deciding where to refresh"
                " in %.0f s",
                type(exc).__name__,
                RETRY_DECISION_S,
            )
            return False
        log.info("v_trips refresher: %s (%s)", self.placement, self.reason)
        if self.placement == "here":
            self._pool = make_pool(
                self.settings.dsn(),
                min_size=1,
                max_size=1,
                name="dashboard_api_refresh",
                open_wait=False,
            )
            self.refresher = VTripsRefresher(self._pool, self.settings.vtrips_refresh_interval_s)
            log.info(
                "v_trips refresher every %d s (instance %s)",
                self.settings.vtrips_refresh_interval_s,
                self.refresher.instance,
            )
        return True

    async def _run(self) -> None:
        while self.placement == "pending" and not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=RETRY_DECISION_S)
            if not self._stop.is_set():
                await self._try_decide()
        if self.refresher is not None:
            await self.refresher.run_forever(self._stop)

    async def stop(self) -> None:
        """End the loop (after the refresh in hand) and close the pool."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._pool is not None:
            self._pool.close()
