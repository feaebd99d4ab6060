"""The ingest worker's `geofence_events` job: one incremental pass of `geofences.events`,
recorded in `tracksolid.ingestion_log` like every other job (`source = 'job'`)."""

from __future__ import annotations

import psycopg

from geofences.events import FenceParams, connect, run_pass
from ingest.jobs import Ingestor, JobStats


def geofence_events(ingestor: Ingestor) -> JobStats:
    """Enter/exit events and out-of-region episodes for what changed since the last run."""
    stats = JobStats("geofence_events")
    try:  # a connection of its own (events.connect: temp_buffers), every 5 minutes
        with connect(ingestor.settings.dsn()) as conn:
            result = run_pass(conn, FenceParams.from_settings(ingestor.settings), ingestor.now())
    except psycopg.Error as exc:  # recorded; the watermark stays, the next run redoes it
        stats.fail("geofence events", exc)
        return ingestor._finish(stats)
    stats.inserted["geofence_events"] += result.events
    stats.inserted["out_of_region_events"] += result.out_of_region
    stats.updated["dirty_vehicles"] += result.dirty_vehicles
    stats.updated["fences_backfilled"] += result.fences_backfilled
    return ingestor._finish(stats)
