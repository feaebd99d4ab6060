"""The ingest worker's `alerts` job: one pass of alerts.run, recorded in
`tracksolid.ingestion_log` like every other job (`source = 'job'`, method `alerts`)."""

from __future__ import annotations

import psycopg

from alerts.run import run_once
from ingest.jobs import Ingestor, JobStats


def alerts_job(ingestor: Ingestor) -> JobStats:
    """Evaluate the rules, compose due messages, deliver the outbox."""
    stats = JobStats("alerts")
    try:
        result = run_once(ingestor.pool, ingestor.settings, ingestor.now())
    except psycopg.Error as exc:  # recorded; the outbox keeps everything for the next run
        stats.fail("alerts pass", exc)
        return ingestor._finish(stats)
    stats.updated["alerts"] += result.alerts_touched
    stats.updated["alerts_resolved"] += result.alerts_resolved
    stats.inserted["alert_outbox"] += result.messages
    stats.updated["delivered"] += result.delivery.delivered
    stats.updated["delivery_failed"] += result.delivery.failed
    stats.updated["given_up"] += result.delivery.given_up
    for error in result.errors:
        stats.fail("alerts", RuntimeError(error))
    return ingestor._finish(stats)
