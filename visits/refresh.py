"""Run the visit computation over a window of time (the job and the CLI share this)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from ts_shared import Settings


@dataclass(frozen=True)
class VisitRun:
    tickets: int  # tickets whose visits were recomputed
    visits: int  # visits found for them


def refresh_visits(
    conn: psycopg.Connection[Any], settings: Settings, since: datetime, until: datetime
) -> VisitRun:
    """Recompute, in one transaction, the visits of every ticket active in [since, until)."""
    with conn.transaction():
        row = conn.execute(
            "SELECT tickets, visits FROM tracksolid.refresh_ticket_visits("
            "%s, %s, %s, %s, %s, make_interval(mins => %s), make_interval(mins => %s), %s)",
            (
                since,
                until,
                settings.visit_radius_m,
                settings.visit_min_dwell_s,
                settings.visit_merge_gap_s,
                settings.visit_before_min,
                settings.visit_after_min,
                settings.visit_stop_kmh,
            ),
        ).fetchone()
    return VisitRun(int(row[0]), int(row[1])) if row else VisitRun(0, 0)


def recent_window(now: datetime, settings: Settings) -> tuple[datetime, datetime]:
    """The job's window: tickets active in the last VISIT_RECOMPUTE_DAYS, up to now."""
    return now - timedelta(days=settings.visit_recompute_days), now
