-- Repeatable · reporting views (seed 002 DATA_FLOW L3): filter lists, trip summaries, live
-- positions and ingest health. Views run with their owner's rights, so the read-only role
-- `dashboard_ro` can read them without any right on schema `tracksolid`.
-- No PostGIS, no TimescaleDB: the same text runs on both database variants (maps get their
-- GeoJSON from the fn_* in R__reporting_geojson.sql, built from lat/lng).
-- CREATE OR REPLACE keeps dependants intact; to drop or rename a column add an explicit
-- DROP VIEW ... above it in this file.

-- ── Filter options (the dropdowns of FleetNow / FleetIntelligence) ─────────────────────────
-- From the registry rather than from v_trips: cheap (one row per vehicle) and a vehicle that
-- has not driven yet can still be picked.

-- poll_state: active | unknown_to_api (the API answered 1002: the worker does not poll it, its
-- data comes by push only, hence push_only; docs/ingestion.md).
CREATE OR REPLACE VIEW reporting.v_filter_vehicles AS
SELECT tracksolid.vehicle_label(d) AS vehicle_number, d.plate_norm, d.vehicle_name, d.imei,
       d.driver_name, d.cost_centre, d.city, d.vehicle_type, d.poll_state,
       d.poll_state <> 'active' AS push_only,
       d.expiration  -- the SIM / platform subscription's end (device sync; may be NULL)
FROM tracksolid.devices d
WHERE d.is_active;

CREATE OR REPLACE VIEW reporting.v_filter_drivers AS
SELECT d.driver_name, count(*) AS vehicles,
       array_agg(DISTINCT d.cost_centre) FILTER (WHERE d.cost_centre IS NOT NULL) AS cost_centres
FROM tracksolid.devices d
WHERE d.is_active AND nullif(btrim(d.driver_name), '') IS NOT NULL
GROUP BY d.driver_name;

CREATE OR REPLACE VIEW reporting.v_filter_cost_centres AS
SELECT d.cost_centre, count(*) AS vehicles
FROM tracksolid.devices d
WHERE d.is_active AND nullif(btrim(d.cost_centre), '') IS NOT NULL
GROUP BY d.cost_centre;

CREATE OR REPLACE VIEW reporting.v_filter_cities AS
SELECT d.city, count(*) AS vehicles
FROM tracksolid.devices d
WHERE d.is_active AND nullif(btrim(d.city), '') IS NOT NULL
GROUP BY d.city;

-- ── Trip summaries (from the v_trips matview; EAT calendar days) ───────────────────────────
-- avg_speed_kmh is distance over driving time (not the mean of the trips' averages).

CREATE OR REPLACE VIEW reporting.v_daily_summary AS
SELECT trip_day AS day, count(*) AS trips, count(DISTINCT imei) AS vehicles,
       count(DISTINCT driver_name) AS drivers, coalesce(sum(distance_km), 0) AS distance_km,
       coalesce(sum(driving_time_s), 0) AS driving_time_s,
       round(sum(distance_km) / nullif(sum(driving_time_s), 0) * 3600, 1) AS avg_speed_kmh,
       max(max_speed_kmh) AS max_speed_kmh
FROM reporting.v_trips
GROUP BY trip_day;

CREATE OR REPLACE VIEW reporting.v_daily_summary_cost_centre AS
SELECT trip_day AS day, cost_centre, count(*) AS trips, count(DISTINCT imei) AS vehicles,
       count(DISTINCT driver_name) AS drivers, coalesce(sum(distance_km), 0) AS distance_km,
       coalesce(sum(driving_time_s), 0) AS driving_time_s,
       round(sum(distance_km) / nullif(sum(driving_time_s), 0) * 3600, 1) AS avg_speed_kmh,
       max(max_speed_kmh) AS max_speed_kmh
FROM reporting.v_trips
GROUP BY trip_day, cost_centre;

CREATE OR REPLACE VIEW reporting.v_weekly_summary AS
SELECT date_trunc('week', trip_day)::date AS week_start, count(*) AS trips,
       count(DISTINCT imei) AS vehicles, count(DISTINCT driver_name) AS drivers,
       coalesce(sum(distance_km), 0) AS distance_km,
       coalesce(sum(driving_time_s), 0) AS driving_time_s,
       round(sum(distance_km) / nullif(sum(driving_time_s), 0) * 3600, 1) AS avg_speed_kmh,
       max(max_speed_kmh) AS max_speed_kmh
FROM reporting.v_trips
GROUP BY 1;

CREATE OR REPLACE VIEW reporting.v_weekly_summary_cost_centre AS
SELECT date_trunc('week', trip_day)::date AS week_start, cost_centre, count(*) AS trips,
       count(DISTINCT imei) AS vehicles, count(DISTINCT driver_name) AS drivers,
       coalesce(sum(distance_km), 0) AS distance_km,
       coalesce(sum(driving_time_s), 0) AS driving_time_s,
       round(sum(distance_km) / nullif(sum(driving_time_s), 0) * 3600, 1) AS avg_speed_kmh,
       max(max_speed_kmh) AS max_speed_kmh
FROM reporting.v_trips
GROUP BY 1, 2;

CREATE OR REPLACE VIEW reporting.v_monthly_summary AS
SELECT date_trunc('month', trip_day)::date AS month_start, count(*) AS trips,
       count(DISTINCT imei) AS vehicles, count(DISTINCT driver_name) AS drivers,
       coalesce(sum(distance_km), 0) AS distance_km,
       coalesce(sum(driving_time_s), 0) AS driving_time_s,
       round(sum(distance_km) / nullif(sum(driving_time_s), 0) * 3600, 1) AS avg_speed_kmh,
       max(max_speed_kmh) AS max_speed_kmh
FROM reporting.v_trips
GROUP BY 1;

CREATE OR REPLACE VIEW reporting.v_monthly_summary_cost_centre AS
SELECT date_trunc('month', trip_day)::date AS month_start, cost_centre, count(*) AS trips,
       count(DISTINCT imei) AS vehicles, count(DISTINCT driver_name) AS drivers,
       coalesce(sum(distance_km), 0) AS distance_km,
       coalesce(sum(driving_time_s), 0) AS driving_time_s,
       round(sum(distance_km) / nullif(sum(driving_time_s), 0) * 3600, 1) AS avg_speed_kmh,
       max(max_speed_kmh) AS max_speed_kmh
FROM reporting.v_trips
GROUP BY 1, 2;

CREATE OR REPLACE VIEW reporting.v_trips_today AS
SELECT * FROM reporting.v_trips WHERE trip_day = reporting.local_day(now());

-- ── Live positions (live_positions ⨝ devices) ──────────────────────────────────────────────

CREATE OR REPLACE VIEW reporting.v_live_positions AS
SELECT lp.imei, coalesce(tracksolid.vehicle_label(d), lp.imei) AS vehicle_number,
       d.vehicle_name, d.plate_norm, d.driver_name, d.driver_phone, d.cost_centre, d.city,
       d.vehicle_type, lp.gps_time, lp.lat, lp.lng, lp.speed_kmh, lp.direction_deg,
       lp.acc_on, lp.online, lp.loc_desc, lp.battery_pct, lp.source,
       reporting.vehicle_status(lp.online, lp.acc_on, lp.speed_kmh, lp.gps_time) AS status,
       extract(epoch FROM now() - lp.gps_time)::integer AS fix_age_s
FROM tracksolid.live_positions lp
LEFT JOIN tracksolid.devices d ON d.imei = lp.imei
WHERE coalesce(d.is_active, true);

-- ── Ingest health (per API method and per push path; replaces the Grafana panels) ─────────

-- How long without a success before a feed counts as stale: about 3-5 times the default
-- poll interval of the ingest worker (docs/configuration.md), longer for pushes, which only
-- arrive while vehicles report.
CREATE OR REPLACE FUNCTION reporting.ingest_stale_after_s(p_source text, p_method text)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN p_source = 'push' THEN 6 * 3600
    WHEN p_method IN ('jimi.user.device.location.list', 'jimi.device.location.get') THEN 600
    WHEN p_method = 'jimi.device.alarm.list' THEN 900
    WHEN p_method IN ('jimi.device.track.list', 'jimi.device.track.mileage',
                      'jimi.open.platform.report.parking', 'jimi.open.platform.report.trips')
        THEN 2 * 3600
    WHEN p_method IN ('jimi.user.device.list', 'jimi.track.device.detail') THEN 14 * 3600
    WHEN p_method LIKE 'jimi.oauth.%' THEN 4 * 3600
    ELSE 3600
END;

-- One row per (source, method) ever logged by an API poll or a push delivery. The key list is
-- a recursive "skip scan" over ingestion_log_method_time_idx (one index probe per key, not a
-- scan of the whole log); the figures read only the last 24 h.
-- A 1002 answer ("illegal device") to a call about one device that the worker has marked
-- `unknown_to_api` (devices.poll_state) is expected, not a failure: such a device is known
-- only from pushes, and the worker stops polling it after that answer. Those calls are counted
-- in expected_refusals_24h, and neither in failures_24h nor as the latest attempt.
CREATE OR REPLACE VIEW reporting.v_ingest_health AS
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
), figures AS (
    SELECT k.source, k.method,
           last_try.logged_at AS last_attempt_at, last_try.ok AS last_attempt_ok,
           last_ok.logged_at AS last_success_at,
           day.calls, day.failures, day.expected, day.rows_24h, day.last_error,
           reporting.ingest_stale_after_s(k.source, k.method) AS stale_after_s
    FROM keys k
    LEFT JOIN LATERAL (
        SELECT l.logged_at, l.ok FROM tracksolid.ingestion_log l
        WHERE l.source = k.source AND l.method = k.method
          AND NOT (NOT l.ok AND l.result_code = 1002 AND EXISTS (
                    SELECT 1 FROM tracksolid.devices d
                    WHERE d.imei = l.target AND d.poll_state <> 'active'))
        ORDER BY l.logged_at DESC LIMIT 1
    ) last_try ON true
    LEFT JOIN LATERAL (
        SELECT l.logged_at FROM tracksolid.ingestion_log l
        WHERE l.source = k.source AND l.method = k.method AND l.ok
        ORDER BY l.logged_at DESC LIMIT 1
    ) last_ok ON true
    LEFT JOIN LATERAL (
        SELECT count(*) AS calls,
               count(*) FILTER (WHERE NOT l.ok AND NOT x.expected) AS failures,
               count(*) FILTER (WHERE x.expected) AS expected,
               coalesce(sum(l.rows) FILTER (WHERE l.ok), 0) AS rows_24h,
               (array_agg(l.error ORDER BY l.logged_at DESC)
                    FILTER (WHERE NOT l.ok AND NOT x.expected))[1] AS last_error
        FROM tracksolid.ingestion_log l
        CROSS JOIN LATERAL (
            SELECT (NOT l.ok AND l.result_code = 1002 AND EXISTS (
                        SELECT 1 FROM tracksolid.devices d
                        WHERE d.imei = l.target AND d.poll_state <> 'active')) AS expected
        ) x
        WHERE l.source = k.source AND l.method = k.method
          AND l.logged_at > now() - interval '24 hours'
    ) day ON true
    WHERE k.source IN ('api', 'push')
)
SELECT f.source, f.method, f.last_attempt_at, f.last_success_at,
       extract(epoch FROM now() - f.last_success_at)::integer AS last_success_age_s,
       f.stale_after_s,
       f.calls AS calls_24h, f.failures AS failures_24h,
       CASE WHEN f.calls > f.expected
            THEN round(f.failures::numeric / (f.calls - f.expected), 3) END
           AS error_share_24h,
       f.rows_24h, f.last_error,
       CASE
           WHEN f.failures > 0 AND (f.failures::numeric / nullif(f.calls - f.expected, 0) >= 0.5
                                    OR NOT f.last_attempt_ok) THEN 'failing'
           WHEN f.last_success_at IS NULL
                OR f.last_success_at < now() - make_interval(secs => f.stale_after_s)
               THEN 'stale'
           ELSE 'ok'
       END AS status,
       f.expected AS expected_refusals_24h
FROM figures f;

COMMENT ON VIEW reporting.v_ingest_health IS
    'Per API method / push path: last success and its age, calls, failures, error share and '
    'rows in the last 24 h, and a status word: failing (>= half the calls of 24 h failed, or '
    'the latest one did) > stale (no success within stale_after_s) > ok. 1002 answers about a '
    'device marked unknown_to_api are expected (expected_refusals_24h), not failures.';
