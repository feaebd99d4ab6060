"""The ingest worker's `derive_trips` job: one incremental pass of `trips.derive`, recorded
in `tracksolid.ingestion_log` like every other job (`source = 'job'`)."""

from __future__ import annotations

import logging

import psycopg

from ingest.jobs import Ingestor, JobStats
from trips.derive import TripParams, run_pass

log = logging.getLogger(__name__)


def derive_trips(ingestor: Ingestor) -> JobStats:
    """Trip speeds and trips derived from positions, for what changed since the last run."""
    stats = JobStats("derive_trips")
    with ingestor.pool.connection() as conn:
        try:
            result = run_pass(conn, TripParams.from_settings(ingestor.settings), ingestor.now())
        except psycopg.Error as exc:  # recorded; the watermark stays, the next run redoes it
            stats.fail("derive trips", exc)
            return ingestor._finish(stats)
    stats.inserted["derived_trips"] += result.derived_trips
    stats.inserted["derived_stops"] += result.derived_stops
    stats.inserted["trip_fills"] += result.fills_written
    stats.updated["trip_fills_removed"] += result.fills_removed
    stats.updated["trip_speeds"] += result.speeds
    stats.updated["dirty_vehicle_days"] += result.dirty_vehicle_days
    log.info("derive_trips: seconds per step %s", result.seconds)
    return ingestor._finish(stats)
