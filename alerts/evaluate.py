"""Rule evaluation: one set-based statement per rule turns source rows into alerts.

Two families of kinds:
- **event kinds** (`alarm`, `overspeed`, `geofence`, `out_of_region`) look at what arrived
  since the rule's watermark (`alert_rules.watermark`, ingestion time where the source has
  one) up to `now - ALERT_EVENT_LAG_S`; each event alerts once. Geofence visits and out-of-region
  episodes are recomputed by their job, so their identities also go to `alert_seen`.
- **state kinds** (`device_silent`, `feed_stale`, `importer_stale`, `backup_failed`,
  `spool_depth`) test a condition now; an alert opens when it becomes true, is updated while
  it stays true and is resolved when it clears. An acknowledged one stays quiet until then.

Every hit upserts the rule's open alert for its subject (`alerts_open_uq`): a repeat counts
(`count++` for events), never a second row. Failure modes: psycopg errors propagate to
`run.run_once`, which records them per rule and goes on with the next rule.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from alerts.rules import SEVERITIES

log = logging.getLogger(__name__)

# Rows written by a transaction that began before `until` may commit a moment after it; the
# event window stops this far behind `now` (ALERT_EVENT_LAG_S) so such rows fall in the next.
EVENT_LAG = timedelta(seconds=15)
EVENT_KINDS = frozenset({"alarm", "overspeed", "geofence", "out_of_region"})
SEEN_KEEP = timedelta(days=3)  # alert_seen rows older than the recompute horizon (+ margin)
_SPOOL_NAME = re.compile(r"\d{12}\.json")
_CTE_KINDS = frozenset({"geofence", "out_of_region"})

# Vehicle scope of a rule (cost centre, IMEI); `x.imei` is the hit's vehicle.
_SCOPE = """
    (%(cost_centre)s::text IS NULL OR lower(d.cost_centre) = lower(%(cost_centre)s::text))
    AND (%(imei)s::text IS NULL OR x.imei = %(imei)s::text)"""
_VEHICLE = "'imei', x.imei, 'vehicle', d.vehicle_number, 'cost_centre', d.cost_centre"

ALARM_SQL = f"""
SELECT x.imei AS subject, x.created_at AS seen, 1 AS n,
       jsonb_build_object({_VEHICLE}, 'alarm_type', x.alarm_type,
           'alarm_name', coalesce(x.alarm_name, t.name), 'severity', {{severity}},
           'alarm_time', x.alarm_time, 'lat', x.lat, 'lng', x.lng, 'speed_kmh', x.speed_kmh
       ) AS payload
FROM tracksolid.alarms x
LEFT JOIN tracksolid.devices d ON d.imei = x.imei
{{types_join}}
WHERE x.created_at > %(since)s AND x.created_at <= %(until)s
  AND (%(types)s::text[] IS NULL OR x.alarm_type = ANY(%(types)s::text[]))
  AND array_position(%(severities)s::text[], {{severity}}) >= %(min_rank)s
  AND {_SCOPE}
"""

# Runs of consecutive fixes above the limit (gaps and islands: a run is the fixes between two
# slow ones); a run alerts once, at the first fix that makes it last min_duration_s, when
# that fix arrived in this window. Fixes arriving more than an hour late are not considered.
OVERSPEED_SQL = f"""
WITH fresh AS (
    SELECT p.imei, min(p.gps_time) AS t0
    FROM tracksolid.position_history p
    WHERE p.gps_time > %(since)s - interval '1 hour'
      AND p.received_at > %(since)s AND p.received_at <= %(until)s
    GROUP BY p.imei
), pts AS (
    SELECT p.imei, p.gps_time, p.received_at, p.speed_kmh, p.lat, p.lng,
           count(*) FILTER (WHERE coalesce(p.speed_kmh, 0) <= %(speed_kmh)s) OVER (
               PARTITION BY p.imei ORDER BY p.gps_time) AS grp
    FROM tracksolid.position_history p
    JOIN fresh f ON f.imei = p.imei
    WHERE p.gps_time >= f.t0 - %(min_duration_s)s * interval '1 second' - interval '1 hour'
      AND p.received_at <= %(until)s AND p.quality_flag IS NULL
), runs AS (
    SELECT pts.*, min(gps_time) OVER w AS run_start, max(speed_kmh) OVER w AS max_speed
    FROM pts WHERE speed_kmh > %(speed_kmh)s
    WINDOW w AS (PARTITION BY imei, grp ORDER BY gps_time)
), crossing AS (
    SELECT DISTINCT ON (imei, run_start) *
    FROM runs
    WHERE gps_time - run_start >= %(min_duration_s)s * interval '1 second'
    ORDER BY imei, run_start, gps_time
)
SELECT x.imei AS subject, x.received_at AS seen, 1 AS n,
       jsonb_build_object({_VEHICLE}, 'since', x.run_start, 'at', x.gps_time,
           'max_speed_kmh', x.max_speed, 'limit_kmh', %(speed_kmh)s,
           'lat', x.lat, 'lng', x.lng) AS payload
FROM crossing x
LEFT JOIN tracksolid.devices d ON d.imei = x.imei
WHERE x.received_at > %(since)s AND {_SCOPE}
"""

DEVICE_SILENT_SQL = f"""
SELECT x.imei AS subject, %(until)s AS seen, 1 AS n,
       jsonb_build_object({_VEHICLE}, 'last_fix', lp.gps_time, 'last_heartbeat', lp.hb_time,
           'silent_minutes', floor(extract(epoch FROM %(until)s
               - greatest(lp.gps_time, lp.hb_time)) / 60)) AS payload
FROM tracksolid.devices x
JOIN tracksolid.devices d ON d.imei = x.imei
JOIN tracksolid.live_positions lp ON lp.imei = x.imei
WHERE x.is_active AND x.enabled_flag IS DISTINCT FROM false
  AND greatest(lp.gps_time, lp.hb_time) < %(until)s - %(minutes)s * interval '1 minute'
  AND {_SCOPE}
"""

FEED_STALE_SQL = """
SELECT %(source)s::text || ':' || %(method)s::text AS subject, %(until)s AS seen, 1 AS n,
       jsonb_build_object('source', %(source)s::text, 'method', %(method)s::text,
                          'last_ok', s.last_ok, 'minutes', %(minutes)s) AS payload
FROM (SELECT max(logged_at) AS last_ok FROM tracksolid.ingestion_log
      WHERE source = %(source)s::text AND method = %(method)s::text AND ok) s
WHERE coalesce(s.last_ok, %(created_at)s) < %(until)s - %(minutes)s * interval '1 minute'
"""

# The importers' own bookkeeping says when they last ran; ingestion_log says how.
_IMPORTER_LAST_RUN = {
    "tickets": ("import_tickets", "SELECT max(last_run_at) FROM tickets.import_meta"),
    "fuel": ("import_fuel", "SELECT max(last_run_at) FROM fuel.ingest_state"),
}
IMPORTER_SQL = """
SELECT 'importer:' || %(feed)s::text AS subject, %(until)s AS seen, 1 AS n,
       jsonb_build_object('feed', %(feed)s::text, 'last_run', s.last_run,
           'reason', CASE WHEN f.ok IS FALSE THEN 'failed' ELSE 'stale' END,
           'error', left(f.error, 500), 'failed_at', CASE WHEN NOT f.ok THEN f.logged_at END
       ) AS payload
FROM ({last_run}) AS s (last_run)
LEFT JOIN LATERAL (
    SELECT ok, error, logged_at FROM tracksolid.ingestion_log
    WHERE source = 'import' AND method = %(method)s::text
    ORDER BY logged_at DESC LIMIT 1
) f ON true
WHERE f.ok IS FALSE
   OR coalesce(s.last_run, %(created_at)s) < %(until)s - %(minutes)s * interval '1 minute'
"""

# backup/pg_backup.py logs each dump as source 'job', method 'db_backup', action 'dump'.
BACKUP_SQL = """
SELECT 'backup' AS subject, %(until)s AS seen, 1 AS n,
       jsonb_build_object('last_ok', s.last_ok, 'hours', %(hours)s,
           'reason', CASE WHEN f.ok IS FALSE THEN 'failed' ELSE 'missing' END,
           'error', left(f.error, 500), 'target', f.target) AS payload
FROM (SELECT max(logged_at) AS last_ok FROM tracksolid.ingestion_log
      WHERE source = 'job' AND method = 'db_backup' AND detail->>'action' = 'dump' AND ok) s
LEFT JOIN LATERAL (
    SELECT ok, error, target FROM tracksolid.ingestion_log
    WHERE source = 'job' AND method = 'db_backup' AND detail->>'action' = 'dump'
    ORDER BY logged_at DESC LIMIT 1
) f ON true
WHERE f.ok IS FALSE
   OR coalesce(s.last_ok, %(created_at)s) < %(until)s - %(hours)s * interval '1 hour'
"""

SPOOL_SQL = """
SELECT %(spool_dir)s::text AS subject, %(until)s AS seen, 1 AS n,
       jsonb_build_object('dir', %(spool_dir)s::text, 'files', %(depth)s::int,
                          'max_files', %(max_files)s) AS payload
WHERE %(depth)s::int > %(max_files)s
"""

# Recomputed sources: new identities are claimed in alert_seen (ON CONFLICT DO NOTHING), so
# an event alerts once however often its row is rewritten; a day of lookback covers the
# confirmation delay of the geofence job. These are CTE lists ending in `hits` (a
# data-modifying CTE must be at the top level of the upsert), the others plain SELECTs.
GEOFENCE_SQL = f"""
ev AS (
    SELECT e.imei, e.geofence_id, g.name AS fence, g.kind AS fence_kind, v.direction, v.at
    FROM tracksolid.geofence_events e
    JOIN tracksolid.geofences g ON g.geofence_id = e.geofence_id
    CROSS JOIN LATERAL (VALUES ('enter', e.entered_at), ('exit', e.exited_at)) v (direction, at)
    WHERE v.at IS NOT NULL
      AND (%(direction)s::text = 'both' OR v.direction = %(direction)s::text)
      AND (%(geofence_ids)s::bigint[] IS NULL OR e.geofence_id = ANY(%(geofence_ids)s::bigint[]))
      AND v.at > greatest(%(since)s - interval '1 day', %(created_at)s) AND v.at <= %(until)s
), keyed AS (
    SELECT ev.*, concat_ws('|', ev.imei, ev.geofence_id, ev.direction,
                           extract(epoch FROM ev.at)) AS event_key
    FROM ev
), claimed AS (
    INSERT INTO tracksolid.alert_seen (rule_id, event_key)
    SELECT %(rule_id)s, x.event_key FROM keyed x
    LEFT JOIN tracksolid.devices d ON d.imei = x.imei
    WHERE {_SCOPE}
    ON CONFLICT DO NOTHING
    RETURNING event_key
), hits AS (
SELECT x.imei || ':' || x.geofence_id AS subject, x.at AS seen, 1 AS n,
       jsonb_build_object({_VEHICLE}, 'geofence_id', x.geofence_id, 'geofence', x.fence,
           'geofence_kind', x.fence_kind, 'direction', x.direction, 'at', x.at) AS payload
FROM keyed x
JOIN claimed c ON c.event_key = x.event_key
LEFT JOIN tracksolid.devices d ON d.imei = x.imei
)"""

OUT_OF_REGION_SQL = f"""
keyed AS (
    SELECT e.imei, e.left_at, e.returned_at, e.last_seen_at,
           concat_ws('|', e.imei, extract(epoch FROM e.left_at)) AS event_key
    FROM tracksolid.out_of_region_events e
    WHERE e.left_at > greatest(%(since)s - interval '1 day', %(created_at)s)
      AND e.left_at <= %(until)s
), claimed AS (
    INSERT INTO tracksolid.alert_seen (rule_id, event_key)
    SELECT %(rule_id)s, x.event_key FROM keyed x
    LEFT JOIN tracksolid.devices d ON d.imei = x.imei
    WHERE {_SCOPE}
    ON CONFLICT DO NOTHING
    RETURNING event_key
), hits AS (
SELECT x.imei AS subject, x.left_at AS seen, 1 AS n,
       jsonb_build_object({_VEHICLE}, 'left_at', x.left_at, 'returned_at', x.returned_at,
                          'last_seen_at', x.last_seen_at) AS payload
FROM keyed x
JOIN claimed c ON c.event_key = x.event_key
LEFT JOIN tracksolid.devices d ON d.imei = x.imei
)"""

# Hits → alerts. Events add to the open alert's count; a state only refreshes it, and is not
# re-opened while an acknowledged alert of the same subject has not been resolved.
UPSERT_SQL = """
WITH {ctes},
agg AS (
    SELECT subject, min(seen) AS first_seen, max(seen) AS last_seen, sum(n)::int AS n,
           (array_agg(payload ORDER BY seen DESC))[1] AS payload
    FROM hits GROUP BY subject
)
INSERT INTO tracksolid.alerts AS a (rule_id, subject, first_seen, last_seen, count, payload)
SELECT %(rule_id)s, agg.subject, agg.first_seen, agg.last_seen, agg.n, agg.payload
FROM agg
WHERE %(is_event)s OR NOT EXISTS (
    SELECT 1 FROM tracksolid.alerts q
    WHERE q.rule_id = %(rule_id)s AND q.subject = agg.subject
      AND q.state = 'acked' AND q.resolved_at IS NULL)
ON CONFLICT (rule_id, subject) WHERE state = 'open' DO UPDATE SET
    last_seen = greatest(a.last_seen, EXCLUDED.last_seen),
    count = a.count + CASE WHEN %(is_event)s THEN EXCLUDED.count ELSE 0 END,
    payload = EXCLUDED.payload
RETURNING subject
"""

RESOLVE_SQL = """
UPDATE tracksolid.alerts SET state = 'resolved', resolved_at = %(until)s
WHERE rule_id = %(rule_id)s AND resolved_at IS NULL AND state IN ('open', 'acked')
  AND NOT (subject = ANY(%(active)s::text[]))
"""


@dataclass
class RuleResult:
    """What evaluating one rule did."""

    touched: int = 0  # alerts opened or updated
    resolved: int = 0
    skipped: str | None = None  # why the rule could not be evaluated here


def spool_depth(directory: str) -> int | None:
    """Deliveries waiting in the receiver's spool (webhook/spool.py names), or None when the
    directory is not visible from this process (another container, not mounted)."""
    path = Path(directory)
    if not path.is_dir():
        return None
    return sum(1 for name in os.listdir(path) if _SPOOL_NAME.fullmatch(name))


def _exists(conn: psycopg.Connection[Any], table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def _hits_sql(
    conn: psycopg.Connection[Any], rule: dict[str, Any], args: dict[str, Any], spool_dir: str
) -> str | RuleResult:
    """The hits query of the rule's kind (and its arguments added to `args`), or a
    RuleResult saying why it is skipped here."""
    kind, params = rule["kind"], rule["params"]
    args.update(params)
    if kind == "alarm":
        classified = _exists(conn, "tracksolid.alarm_types")
        if not classified and "min_severity" in params:
            return RuleResult(skipped="min_severity needs tracksolid.alarm_types")
        args["types"] = params.get("types") or None
        args["severities"] = list(SEVERITIES)
        args["min_rank"] = SEVERITIES.index(params.get("min_severity", "info")) + 1
        if classified:
            return ALARM_SQL.format(
                severity="coalesce(t.severity, 'medium')",
                types_join="LEFT JOIN tracksolid.alarm_types t ON t.alarm_type = x.alarm_type",
            )
        no_types = "CROSS JOIN (SELECT NULL::text AS name) t"
        return ALARM_SQL.format(severity="'medium'", types_join=no_types)
    if kind in ("geofence", "out_of_region"):
        table = "geofence_events" if kind == "geofence" else "out_of_region_events"
        if not _exists(conn, f"tracksolid.{table}"):
            return RuleResult(skipped=f"tracksolid.{table} does not exist")
        args.setdefault("direction", "both")
        args["geofence_ids"] = params.get("geofence_ids") or None
        return GEOFENCE_SQL if kind == "geofence" else OUT_OF_REGION_SQL
    if kind == "importer_stale":
        args["method"], last_run = _IMPORTER_LAST_RUN[params["feed"]]
        return IMPORTER_SQL.format(last_run=last_run)
    if kind == "spool_depth":
        depth = spool_depth(spool_dir)
        if depth is None:
            return RuleResult(skipped=f"spool directory {spool_dir} is not visible here")
        args.update(spool_dir=spool_dir, depth=depth)
        return SPOOL_SQL
    return {
        "overspeed": OVERSPEED_SQL,
        "device_silent": DEVICE_SILENT_SQL,
        "feed_stale": FEED_STALE_SQL,
        "backup_failed": BACKUP_SQL,
    }[kind]


def evaluate_rule(
    conn: psycopg.Connection[Any],
    rule: dict[str, Any],
    now: datetime,
    spool_dir: str,
    lag: timedelta = EVENT_LAG,
) -> RuleResult:
    """Evaluate one rule in one transaction: upsert its alerts, resolve cleared states and
    move its watermark. The rule row is locked (SKIP LOCKED: a second evaluator running at
    the same moment skips it rather than counting the same events twice). Event windows end
    at the earlier of `now` and the database clock, minus `lag`: ingestion times are
    database times. Raises psycopg errors (the transaction is rolled back)."""
    is_event = rule["kind"] in EVENT_KINDS
    with conn.transaction():
        locked = conn.execute(
            "SELECT watermark, now() FROM tracksolid.alert_rules WHERE rule_id = %s"
            " FOR UPDATE SKIP LOCKED",
            (rule["rule_id"],),
        ).fetchone()
        if locked is None:
            return RuleResult(skipped="being evaluated by another process")
        watermark, db_now = locked
        until = min(now, db_now) - lag if is_event else now
        since = watermark or rule["created_at"]
        if is_event and since >= until:
            return RuleResult()
        args: dict[str, Any] = {
            "rule_id": rule["rule_id"],
            "since": since,
            "until": until,
            "is_event": is_event,
            "created_at": rule["created_at"],
            "cost_centre": rule["cost_centre"],
            "imei": rule["imei"],
        }
        hits = _hits_sql(conn, rule, args, spool_dir)
        if isinstance(hits, RuleResult):
            return hits
        # The kind's SQL is one of the constants above (no user text); values are bound.
        ctes = hits if rule["kind"] in _CTE_KINDS else f"hits AS ({hits})"
        active = [r[0] for r in conn.execute(UPSERT_SQL.format(ctes=ctes), args).fetchall()]
        result = RuleResult(touched=len(active))
        if is_event:
            conn.execute(
                "UPDATE tracksolid.alert_rules SET watermark = %s WHERE rule_id = %s",
                (until, rule["rule_id"]),
            )
        else:
            cur = conn.execute(RESOLVE_SQL, {**args, "active": active})
            result.resolved = cur.rowcount
    return result


def prune_seen(conn: psycopg.Connection[Any], now: datetime) -> None:
    """Forget event identities older than any recompute can reach."""
    conn.execute("DELETE FROM tracksolid.alert_seen WHERE seen_at < %s", (now - SEEN_KEEP,))
