-- Health of every feed of the stack (issue #18): GET /health/ingest.
--
-- One row per feed: every API method and push path, both importers, ticket geocoding, the
-- database backup, the v_trips refresher and every ingest-worker job. What a feed did comes
-- from tracksolid.ingestion_log (API calls, push deliveries, job runs, imports, geocoding,
-- backups) and reporting.refresh_log (materialized-view refreshes); the catalogue below
-- lists the feeds that are expected, so one that never ran shows up as `never`.
--
-- This file sorts before R__reporting_core.sql, so on an empty database it may run first: it
-- depends only on tables of versioned migrations, and the one function reading objects of
-- later repeatables (fn_ingest_health) is plpgsql (bound when called, not when created).

-- ── The feeds that are expected ─────────────────────────────────────────────────────────────
-- `method` is the name ingestion_log / refresh_log use. Jobs: ingest_worker.JOB_NAMES; push
-- paths: webhook.parse.IOTHUB_PARSERS (tests/test_health_feeds.py keeps them in step).
CREATE OR REPLACE VIEW reporting.v_health_catalog AS
SELECT c.feed, c.label, c.source, c.method, c.sort_order
FROM (VALUES
    ('api:jimi.user.device.location.list', 'Live positions (API poll)', 'api',
     'jimi.user.device.location.list', 100),
    ('api:jimi.device.track.list', 'GPS tracks (API poll)', 'api', 'jimi.device.track.list', 101),
    ('api:jimi.device.track.mileage', 'Trips (API report)', 'api',
     'jimi.device.track.mileage', 102),
    ('api:jimi.open.platform.report.parking', 'Stops and idling (API report)', 'api',
     'jimi.open.platform.report.parking', 103),
    ('api:jimi.device.alarm.list', 'Alarms (API poll)', 'api', 'jimi.device.alarm.list', 104),
    ('api:jimi.user.device.list', 'Device list (API)', 'api', 'jimi.user.device.list', 105),
    ('api:jimi.track.device.detail', 'Device details (API)', 'api',
     'jimi.track.device.detail', 106),
    ('push:/pushgps', 'GPS positions (push)', 'push', '/pushgps', 200),
    ('push:/pushhb', 'Heartbeats (push)', 'push', '/pushhb', 201),
    ('push:/pushalarm', 'Alarms (push)', 'push', '/pushalarm', 202),
    ('push:/pushevent', 'Device events (push)', 'push', '/pushevent', 203),
    ('push:/pushlbs', 'Cell-tower positions (push)', 'push', '/pushlbs', 204),
    ('push:/pushobd', 'OBD data (push)', 'push', '/pushobd', 205),
    ('push:/pushfaultinfo', 'Fault codes (push)', 'push', '/pushfaultinfo', 206),
    ('push:/pushtripreport', 'Trip reports (push)', 'push', '/pushtripreport', 207),
    ('push:/pushoil', 'Fuel-level sensor (push)', 'push', '/pushoil', 208),
    ('push:/pushtem', 'Temperature sensor (push)', 'push', '/pushtem', 209),
    ('push:/pushIothubEvent', 'IoT hub events (push)', 'push', '/pushIothubEvent', 210),
    ('import:tickets', 'Tickets import (INC)', 'import', 'import_tickets', 300),
    ('import:fuel', 'Fuel fills import', 'import', 'import_fuel', 301),
    ('geocode:tickets', 'Ticket geocoding', 'geocode', 'tickets', 302),
    ('backup', 'Database backup', 'backup', 'db_backup', 400),
    ('refresh:v_trips', 'Trips list refresh (materialized view)', 'refresh', 'reporting.v_trips', 401),
    ('job:device_sync', 'Device sync (job)', 'job', 'device_sync', 500),
    ('job:live_positions', 'Live positions (job)', 'job', 'live_positions', 501),
    ('job:track_list', 'GPS tracks (job)', 'job', 'track_list', 502),
    ('job:trips', 'Trips (job)', 'job', 'trips', 503),
    ('job:parking', 'Stops (job)', 'job', 'parking', 504),
    ('job:alarms', 'Alarms (job)', 'job', 'alarms', 505),
    ('job:mileage_rollup', 'Daily mileage rollup (job)', 'job', 'mileage_rollup', 506),
    ('job:housekeeping', 'Housekeeping and retention (job)', 'job', 'housekeeping', 507),
    ('job:unregistered_pushes', 'Unregistered pushing devices (job)', 'job',
     'unregistered_pushes', 508),
    ('job:derive_trips', 'Trips derived from positions (job)', 'job', 'derive_trips', 509),
    ('job:ticket_visits', 'Ticket visits (job)', 'job', 'ticket_visits', 510),
    ('job:geofence_events', 'Geofence events (job)', 'job', 'geofence_events', 511),
    ('job:alerts', 'Alert rules (job)', 'job', 'alerts', 512),
    ('job:vtrips_refresh', 'Trips list refresh (job)', 'job', 'vtrips_refresh', 513)
) AS c(feed, label, source, method, sort_order);

COMMENT ON VIEW reporting.v_health_catalog IS
    'The feeds /health/ingest always lists (status never until they first run), with their '
    'readable labels; feeds seen in the logs but not listed here are shown too.';

-- ── Feed keys ───────────────────────────────────────────────────────────────────────────────
-- The feed a row of ingestion_log belongs to. A job's catch-up pass (`trips_catchup`) counts
-- for the job; backups are logged as job `db_backup`.
CREATE OR REPLACE FUNCTION reporting.health_feed_key(p_source text, p_method text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN p_source = 'import' AND p_method = 'import_tickets' THEN 'import:tickets'
    WHEN p_source = 'import' AND p_method = 'import_fuel' THEN 'import:fuel'
    WHEN p_source = 'import' THEN 'import:' || regexp_replace(p_method, '^import_', '')
    WHEN p_source = 'job' AND p_method = 'db_backup' THEN 'backup'
    WHEN p_source = 'job' THEN 'job:' || regexp_replace(p_method, '_catchup$', '')
    ELSE p_source || ':' || p_method
END;

-- ── Schedules and stale thresholds ─────────────────────────────────────────────────────────
-- The latest time at or before p_at when the tickets importer was due: every 20 minutes from
-- 06:00 to 20:40 EAT (cron `*/20 6-20 * * *`, scripts/run_importers.py, docs/tickets.md).
CREATE OR REPLACE FUNCTION reporting.health_tickets_due(p_at timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (
    SELECT CASE
        WHEN l::time < time '06:00' THEN (l::date - 1 + time '20:40')
        WHEN l::time >= time '20:40' THEN (l::date + time '20:40')
        ELSE date_trunc('hour', l)
             + make_interval(mins => (extract(minute FROM l)::integer / 20) * 20)
    END AT TIME ZONE 'Africa/Nairobi'
    FROM (SELECT p_at AT TIME ZONE 'Africa/Nairobi' AS l) t
);

-- How long a feed may go without a success before it is `stale` (NULL: never stale).
-- Polls and jobs: about 3-10 times the default interval (docs/configuration.md); pushes: 6 h
-- (they arrive only while vehicles report); the tickets import and geocoding: a run that was
-- due at least an hour ago must have succeeded (nights, 20:40-06:00 EAT, are no gap); fuel
-- (hourly): 3 h; backup (nightly): 30 h; the v_trips refresher (every 5 min): 30 min. A
-- feed not in this list: 1 h (api) or none (a one-off such as the worker's start-up).
CREATE OR REPLACE FUNCTION reporting.health_stale_after_s(p_feed text)
RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE
    WHEN p_feed LIKE 'push:%' THEN 6 * 3600
    WHEN p_feed IN ('api:jimi.user.device.location.list', 'api:jimi.device.location.get')
        THEN 600
    WHEN p_feed = 'api:jimi.device.alarm.list' THEN 900
    WHEN p_feed IN ('api:jimi.device.track.list', 'api:jimi.device.track.mileage',
                    'api:jimi.open.platform.report.parking', 'api:jimi.open.platform.report.trips')
        THEN 2 * 3600
    WHEN p_feed IN ('api:jimi.user.device.list', 'api:jimi.track.device.detail') THEN 14 * 3600
    WHEN p_feed LIKE 'api:jimi.oauth.%' THEN 4 * 3600
    WHEN p_feed LIKE 'api:%' THEN 3600
    WHEN p_feed IN ('import:tickets', 'geocode:tickets')
        THEN extract(epoch FROM now() - reporting.health_tickets_due(now() - interval '1 hour'))
             ::integer
    WHEN p_feed = 'import:fuel' THEN 3 * 3600
    WHEN p_feed = 'backup' THEN 30 * 3600
    WHEN p_feed LIKE 'refresh:%' THEN 1800
    WHEN p_feed = 'job:device_sync' THEN 14 * 3600          -- every 6 h
    WHEN p_feed IN ('job:live_positions', 'job:alerts') THEN 600   -- every 60 s
    WHEN p_feed = 'job:alarms' THEN 900                     -- every 2 min
    WHEN p_feed IN ('job:track_list', 'job:trips', 'job:parking', 'job:mileage_rollup')
        THEN 2 * 3600                                       -- every 30 min
    WHEN p_feed = 'job:housekeeping' THEN 50 * 3600         -- daily
    WHEN p_feed = 'job:unregistered_pushes' THEN 3 * 3600   -- hourly
    WHEN p_feed = 'job:derive_trips' THEN 3600              -- every 15 min
    WHEN p_feed = 'job:ticket_visits' THEN 3600             -- every 10 min
    WHEN p_feed = 'job:geofence_events' THEN 1800           -- every 5 min
    WHEN p_feed = 'job:vtrips_refresh' THEN 1800            -- every 5 min
END;

-- An error text fit to show: credentials in URLs and key=value pairs are masked (the writers
-- never log secrets; this is the second line of defence), and it is cut at 500 characters.
CREATE OR REPLACE FUNCTION reporting.health_redact(p_error text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN left(
    regexp_replace(
        regexp_replace(p_error, '(://[^:/@\s]+:)[^@\s]+@', '\1***@', 'g'),
        '((access_?token|refresh_?token|token|secret|password|passwd|pwd|api_?key|app_?key|'
        'app_?secret|sign|key)\s*[=:]\s*)[^&\s"'',;]+',
        '\1***', 'gi'),
    500);

-- ── One row per feed ───────────────────────────────────────────────────────────────────────
-- Per (source, method) of ingestion_log — keys found by a recursive "skip scan" over
-- ingestion_log_method_time_idx — and per object of refresh_log: the latest attempt, success
-- and failure (with its reason), and the counts of the last 24 h; then grouped by feed and
-- joined to the catalogue. As in v_ingest_health, a 1002 answer about a device marked
-- unknown_to_api is expected (expected_refusals_24h), not a failure. A restore (logged by the
-- backup tool in the restored database) is a manual operation, not part of the backup feed.
-- Status: never (no run at all) > failing (the latest attempt failed; for API methods and
-- push paths, which make many calls, also when >= half of the calls of 24 h failed) > stale
-- (no success within stale_after_s) > ok. A job, import, backup or refresh that succeeds
-- again is ok at once; its last failure and reason stay visible.
CREATE OR REPLACE VIEW reporting.v_feed_health AS
WITH RECURSIVE keys AS (
    (SELECT l.source, l.method FROM tracksolid.ingestion_log l
     ORDER BY l.source, l.method LIMIT 1)
    UNION ALL
    SELECT nxt.source, nxt.method
    FROM keys k
    CROSS JOIN LATERAL (
        SELECT l.source, l.method FROM tracksolid.ingestion_log l
        WHERE (l.source, l.method) > (k.source, k.method)
        ORDER BY l.source, l.method LIMIT 1
    ) nxt
), objects AS (
    (SELECT r.object_name FROM reporting.refresh_log r ORDER BY r.object_name LIMIT 1)
    UNION ALL
    SELECT nxt.object_name
    FROM objects o
    CROSS JOIN LATERAL (
        SELECT r.object_name FROM reporting.refresh_log r
        WHERE r.object_name > o.object_name ORDER BY r.object_name LIMIT 1
    ) nxt
), log_keys AS (
    SELECT k.source, k.method, reporting.health_feed_key(k.source, k.method) AS feed,
           (k.source = 'job' AND k.method = 'db_backup') AS is_backup
    FROM keys k
), per_key AS (
    SELECT k.feed, k.source, k.method,
           last_try.logged_at AS last_attempt_at, last_try.ok AS last_attempt_ok,
           last_ok.logged_at AS last_success_at,
           last_bad.logged_at AS last_failure_at,
           coalesce(last_bad.error, 'result code ' || last_bad.result_code,
                    CASE WHEN last_bad.logged_at IS NOT NULL
                         THEN 'failed (no reason recorded)' END) AS last_error,
           day.calls, day.failures, day.expected, day.rows_24h
    FROM log_keys k
    LEFT JOIN LATERAL (
        SELECT l.logged_at, l.ok FROM tracksolid.ingestion_log l
        WHERE l.source = k.source AND l.method = k.method
          AND NOT (k.is_backup AND l.detail->>'action' = 'restore')
          AND NOT (NOT l.ok AND l.result_code = 1002 AND EXISTS (
                    SELECT 1 FROM tracksolid.devices d
                    WHERE d.imei = l.target AND d.poll_state <> 'active'))
        ORDER BY l.logged_at DESC LIMIT 1
    ) last_try ON true
    LEFT JOIN LATERAL (
        SELECT l.logged_at FROM tracksolid.ingestion_log l
        WHERE l.source = k.source AND l.method = k.method AND l.ok
          AND NOT (k.is_backup AND l.detail->>'action' = 'restore')
        ORDER BY l.logged_at DESC LIMIT 1
    ) last_ok ON true
    LEFT JOIN LATERAL (
        SELECT l.logged_at, l.error, l.result_code FROM tracksolid.ingestion_log l
        WHERE l.source = k.source AND l.method = k.method AND NOT l.ok
          AND NOT (k.is_backup AND l.detail->>'action' = 'restore')
          AND NOT (l.result_code = 1002 AND EXISTS (
                    SELECT 1 FROM tracksolid.devices d
                    WHERE d.imei = l.target AND d.poll_state <> 'active'))
        ORDER BY l.logged_at DESC LIMIT 1
    ) last_bad ON true
    LEFT JOIN LATERAL (
        SELECT count(*) AS calls,
               count(*) FILTER (WHERE NOT l.ok AND NOT x.expected) AS failures,
               count(*) FILTER (WHERE x.expected) AS expected,
               -- a backup has no rows: count its successful dumps
               CASE WHEN k.is_backup
                    THEN count(*) FILTER (WHERE l.ok AND l.detail->>'action' = 'dump')
                    -- the tickets importer logs each file and then the run (target 'run')
                    ELSE coalesce(sum(l.rows) FILTER (WHERE l.ok AND NOT (
                        k.method = 'import_tickets' AND l.target = 'run')), 0) END AS rows_24h
        FROM tracksolid.ingestion_log l
        CROSS JOIN LATERAL (
            SELECT (NOT l.ok AND l.result_code = 1002 AND EXISTS (
                        SELECT 1 FROM tracksolid.devices d
                        WHERE d.imei = l.target AND d.poll_state <> 'active')) AS expected
        ) x
        WHERE l.source = k.source AND l.method = k.method
          AND l.logged_at > now() - interval '24 hours'
          AND NOT (k.is_backup AND l.detail->>'action' = 'restore')
    ) day ON true
    UNION ALL
    -- materialized-view refreshes: rows_24h counts the successful refreshes
    SELECT 'refresh:' || regexp_replace(o.object_name, '^reporting\.', ''), 'refresh',
           o.object_name,
           last_try.finished_at, last_try.ok, last_ok.finished_at, last_bad.finished_at,
           coalesce(last_bad.error, CASE WHEN last_bad.finished_at IS NOT NULL
                                         THEN 'failed (no reason recorded)' END),
           day.calls, day.failures, 0, day.oks
    FROM objects o
    LEFT JOIN LATERAL (
        SELECT r.finished_at, r.ok FROM reporting.refresh_log r
        WHERE r.object_name = o.object_name ORDER BY r.finished_at DESC LIMIT 1
    ) last_try ON true
    LEFT JOIN LATERAL (
        SELECT r.finished_at FROM reporting.refresh_log r
        WHERE r.object_name = o.object_name AND r.ok ORDER BY r.finished_at DESC LIMIT 1
    ) last_ok ON true
    LEFT JOIN LATERAL (
        SELECT r.finished_at, r.error FROM reporting.refresh_log r
        WHERE r.object_name = o.object_name AND NOT r.ok ORDER BY r.finished_at DESC LIMIT 1
    ) last_bad ON true
    LEFT JOIN LATERAL (
        SELECT count(*) AS calls, count(*) FILTER (WHERE NOT r.ok) AS failures,
               count(*) FILTER (WHERE r.ok) AS oks
        FROM reporting.refresh_log r
        WHERE r.object_name = o.object_name AND r.finished_at > now() - interval '24 hours'
    ) day ON true
), per_feed AS (
    SELECT p.feed,
           min(p.source) AS log_source,
           min(p.method) AS method,
           max(p.last_attempt_at) AS last_attempt_at,
           (array_agg(p.last_attempt_ok ORDER BY p.last_attempt_at DESC NULLS LAST))[1]
               AS last_attempt_ok,
           max(p.last_success_at) AS last_success_at,
           max(p.last_failure_at) AS last_failure_at,
           (array_agg(p.last_error ORDER BY p.last_failure_at DESC NULLS LAST))[1] AS last_error,
           sum(p.calls)::integer AS calls, sum(p.failures)::integer AS failures,
           sum(p.expected)::integer AS expected, sum(p.rows_24h)::bigint AS rows_24h
    FROM per_key p
    GROUP BY p.feed
), feeds AS (
    SELECT coalesce(c.feed, f.feed) AS feed,
           coalesce(c.label, CASE f.log_source
               WHEN 'api' THEN 'API ' || f.method
               WHEN 'push' THEN 'Push ' || f.method
               WHEN 'job' THEN replace(substr(f.feed, 5), '_', ' ') || ' (job)'
               WHEN 'import' THEN 'Import ' || f.method
               WHEN 'refresh' THEN 'Refresh of ' || f.method
               ELSE f.feed END) AS label,
           coalesce(c.source, f.log_source) AS source,
           coalesce(f.method, c.method) AS method,
           coalesce(c.sort_order, 900) AS sort_order,
           f.last_attempt_at, f.last_attempt_ok, f.last_success_at, f.last_failure_at,
           f.last_error, coalesce(f.calls, 0) AS calls, coalesce(f.failures, 0) AS failures,
           coalesce(f.expected, 0) AS expected, coalesce(f.rows_24h, 0) AS rows_24h,
           reporting.health_stale_after_s(coalesce(c.feed, f.feed)) AS stale_after_s
    FROM reporting.v_health_catalog c
    FULL JOIN per_feed f ON f.feed = c.feed
)
SELECT f.feed, f.label, f.source, f.method,
       CASE
           WHEN f.last_success_at IS NULL AND f.last_failure_at IS NULL THEN 'never'
           WHEN f.last_attempt_ok IS FALSE
                OR (f.source IN ('api', 'push') AND f.failures > 0
                    AND f.failures::numeric / nullif(f.calls - f.expected, 0) >= 0.5)
               THEN 'failing'
           WHEN f.last_success_at IS NULL
                OR f.last_success_at < now() - make_interval(secs => f.stale_after_s)
               THEN 'stale'
           ELSE 'ok'
       END AS status,
       f.last_success_at AS last_success,
       f.last_failure_at AS last_failure,
       reporting.health_redact(f.last_error) AS last_error,
       f.rows_24h, f.stale_after_s,
       f.last_attempt_at, f.last_success_at,
       extract(epoch FROM now() - f.last_success_at)::integer AS last_success_age_s,
       f.calls AS calls_24h, f.failures AS failures_24h,
       CASE WHEN f.calls > f.expected
            THEN round(f.failures::numeric / (f.calls - f.expected), 3) END AS error_share_24h,
       f.expected AS expected_refusals_24h,
       f.sort_order
FROM feeds f;

COMMENT ON VIEW reporting.v_feed_health IS
    'One row per feed (API methods, push paths, importers, geocoding, backup, view refreshes, '
    'worker jobs): last success, last failure and its reason, counts of the last 24 h, the '
    'stale threshold and a status word: never > failing > stale > ok (issue #18).';

-- ── GET /health/ingest ──────────────────────────────────────────────────────────────────────
-- The rows of v_feed_health and the worst status of the feeds that ran (a feed that never ran
-- is shown but does not turn the page red; no feed ran at all: no_data). `devices` counts the
-- devices by poll state (push_only = unknown_to_api: not polled, data by push only);
-- `imports` is the freshness of the tickets and fuel data (moves at every committed file).
CREATE OR REPLACE FUNCTION reporting.fn_ingest_health()
RETURNS json
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
SET TimeZone = 'UTC'
SET jit = off  -- the plan's cost estimate invites JIT, whose compile time is 5x the query's
AS $$
DECLARE
    result json;
BEGIN
    SELECT json_build_object(
        'status', CASE
            WHEN bool_and(h.status = 'never') THEN 'no_data'
            WHEN bool_or(h.status = 'failing') THEN 'failing'
            WHEN bool_or(h.status = 'stale') THEN 'stale'
            ELSE 'ok' END,
        'feeds', coalesce(json_agg(json_build_object(
            'feed', h.feed, 'label', h.label, 'source', h.source, 'method', h.method,
            'status', h.status, 'last_success', h.last_success,
            'last_failure', h.last_failure, 'last_error', h.last_error,
            'rows_24h', h.rows_24h, 'stale_after_s', h.stale_after_s,
            'last_attempt_at', h.last_attempt_at, 'last_success_at', h.last_success_at,
            'last_success_age_s', h.last_success_age_s, 'calls_24h', h.calls_24h,
            'failures_24h', h.failures_24h, 'error_share_24h', h.error_share_24h,
            'expected_refusals_24h', h.expected_refusals_24h)
            ORDER BY h.sort_order, h.feed), '[]'),
        'devices', (SELECT json_build_object(
                        'active', count(*) FILTER (WHERE d.poll_state = 'active'),
                        'push_only', count(*) FILTER (WHERE d.poll_state <> 'active'),
                        'push_only_imeis', coalesce((array_agg(d.imei ORDER BY d.imei)
                            FILTER (WHERE d.poll_state <> 'active'))[1:100], '{}'),
                        'unregistered_last_hour', (SELECT count(*)
                            FROM tracksolid.push_unregistered p
                            WHERE p.last_seen_at > now() - interval '1 hour'))
                    FROM tracksolid.devices d WHERE d.is_active),
        -- freshness of the two imported feeds, as their dashboards show it
        'imports', json_build_object(
            'tickets', tickets.freshness('inc'),
            'fuel', (SELECT json_build_object(
                         'last_import_at', (SELECT max(f.processed_at) FROM fuel.ingest_files f),
                         'last_run_at', (SELECT max(s.last_run_at) FROM fuel.ingest_state s),
                         'minutes_since_import', (extract(epoch FROM now() - (
                             SELECT max(f.processed_at) FROM fuel.ingest_files f)) / 60)::integer))),
        'generated_at', now())
    INTO result
    FROM reporting.v_feed_health h;
    RETURN result;
END
$$;

REVOKE EXECUTE ON FUNCTION reporting.fn_ingest_health() FROM PUBLIC;
