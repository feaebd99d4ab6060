"""The ingest worker's `vtrips_refresh` job: `REFRESH MATERIALIZED VIEW CONCURRENTLY
reporting.v_trips` on the primary (issue #19, read replicas).

The read-API may run on a hot standby, where REFRESH fails, so the worker — which always has
the read-write `DATABASE_URL` — refreshes the view every `VTRIPS_REFRESH_INTERVAL_S`. It uses
the read-API's `VTripsRefresher` unchanged: advisory lock 920145 and the "refreshed less than
0.9 x interval ago" check keep the worker and any writable read-API from refreshing twice per
interval. Each refresh is a `reporting.refresh_log` row (`source = 'ingest_worker'`); each run
is an `ingestion_log` row like every job (a failed REFRESH is a failed run).
"""

from __future__ import annotations

import os
import socket

import psycopg

from dashboard.refresher import VTripsRefresher
from ingest.jobs import Ingestor, JobStats

SOURCE = "ingest_worker"


def vtrips_refresh(ingestor: Ingestor) -> JobStats:
    """Refresh reporting.v_trips unless it was refreshed less than 0.9 x interval ago or
    another process is refreshing it right now."""
    stats = JobStats("vtrips_refresh")
    refresher = VTripsRefresher(
        ingestor.pool,
        ingestor.settings.vtrips_refresh_interval_s,
        instance=f"{socket.gethostname()}:{os.getpid()}:{SOURCE}",
        source=SOURCE,
    )
    try:
        result = refresher.run_once()
    except psycopg.Error as exc:  # the database went away mid-run; the next run retries
        stats.fail("refresh reporting.v_trips", exc)
        return ingestor._finish(stats)
    if result.outcome == "failed":
        stats.fail("refresh reporting.v_trips", RuntimeError(result.error or "failed"))
    elif result.outcome == "refreshed":
        stats.updated["v_trips"] += 1
    return ingestor._finish(stats)
