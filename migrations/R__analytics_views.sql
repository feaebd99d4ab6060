-- Repeatable · analytics views `tracksolid.v_*` (seed 000 §5) and utilisation.
-- They read the base tables directly. The daily ones are thin views over bounded set-returning
-- functions `tracksolid.fn_*_daily(from, to)` (EAT calendar days, inclusive) so that the
-- read-API can ask for a date range with index-friendly timestamp predicates while ad-hoc SQL
-- keeps the familiar view names. `reporting.v_*` wrappers at the end expose them to the
-- read-only role `dashboard_ro` (which may read schema `reporting` only).
-- No PostGIS, no TimescaleDB: the same text runs on both database variants.
-- CREATE OR REPLACE keeps dependants intact; to drop or rename a column, add an explicit
-- DROP VIEW ... CASCADE above it in this file (the wrappers below are re-created with it).

-- Shared label of a vehicle: plate, else name, else IMEI.
CREATE OR REPLACE FUNCTION tracksolid.vehicle_label(d tracksolid.devices)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
RETURN coalesce(nullif(d.vehicle_number, ''), nullif(d.vehicle_name, ''), d.imei);

-- ── Per-vehicle, per-day building blocks ───────────────────────────────────────────────────
-- SECURITY DEFINER: the reporting.* wrapper views call them on behalf of dashboard_ro, and a
-- function called from a view runs with the caller's rights, not the view owner's.

-- Driver aggregates with the aggression index: harsh acceleration + harsh braking + overspeed
-- alarms per 100 km driven (NULL below 1 km: a single alarm on a 200 m trip is not a rate).
-- Trips and alarms count for the driver assigned to the vehicle at their time
-- (tracksolid.driver_assignments, 0105): one row per day, vehicle and driver.
CREATE OR REPLACE FUNCTION tracksolid.fn_driver_aggregates_daily(p_from date, p_to date)
RETURNS TABLE (
    day date, imei text, vehicle_number text, driver_name text, cost_centre text, city text,
    trips bigint, distance_km numeric, driving_time_s bigint, max_speed_kmh real,
    harsh_acceleration bigint, harsh_braking bigint, overspeed bigint,
    aggression_index numeric)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    WITH bounds AS (
        SELECT reporting.local_day_start(p_from) AS t0, reporting.local_day_start(p_to + 1) AS t1
    ), ev AS (
        SELECT reporting.local_day(t.start_time) AS day, t.imei, t.start_time AS at,
               1 AS trips, t.distance_km, t.driving_time_s, t.max_speed_kmh,
               0 AS ha, 0 AS hb, 0 AS os
        FROM tracksolid.trips t, bounds b
        WHERE t.start_time >= b.t0 AND t.start_time < b.t1
        UNION ALL
        SELECT reporting.local_day(a.alarm_time), a.imei, a.alarm_time, 0, NULL, NULL, NULL,
               (c.cat = 'harsh_acceleration')::int, (c.cat = 'harsh_braking')::int,
               (c.cat = 'overspeed')::int
        FROM tracksolid.alarms a, bounds b,
             LATERAL (SELECT reporting.alarm_category(a.alarm_type, a.alarm_name) AS cat) c
        WHERE a.alarm_time >= b.t0 AND a.alarm_time < b.t1
          AND c.cat IN ('harsh_acceleration', 'harsh_braking', 'overspeed')
    ), agg AS (
        SELECT ev.day, ev.imei, da.driver_name, sum(ev.trips) AS trips,
               coalesce(sum(ev.distance_km), 0) AS km,
               coalesce(sum(ev.driving_time_s), 0) AS driving_s, max(ev.max_speed_kmh) AS vmax,
               sum(ev.ha) AS ha, sum(ev.hb) AS hb, sum(ev.os) AS os
        FROM ev
        LEFT JOIN LATERAL (
            SELECT a.driver_name FROM tracksolid.driver_assignments a
            WHERE a.imei = ev.imei AND a.valid_from <= ev.at
              AND (a.valid_to IS NULL OR a.valid_to > ev.at)
            ORDER BY a.valid_from DESC LIMIT 1
        ) da ON true
        GROUP BY ev.day, ev.imei, da.driver_name
    )
    SELECT agg.day, agg.imei, tracksolid.vehicle_label(d), agg.driver_name, d.cost_centre, d.city,
           agg.trips, agg.km, agg.driving_s, agg.vmax, agg.ha, agg.hb, agg.os,
           CASE WHEN agg.km >= 1 THEN round((agg.ha + agg.hb + agg.os) * 100 / agg.km, 2) END
    FROM agg
    LEFT JOIN tracksolid.devices d ON d.imei = agg.imei
$$;

-- Utilisation: driving vs idle (ignition on, not moving) vs parked seconds per vehicle per day.
-- driving = trips' driving time (or their duration), idle = idling stops (parking_events with
-- acc_on), parked = the rest of the day; today counts only the time elapsed so far. Trips and
-- stops are attributed to the day they start on and capped at the period.
CREATE OR REPLACE FUNCTION tracksolid.fn_utilisation_daily(p_from date, p_to date)
RETURNS TABLE (
    day date, imei text, vehicle_number text, driver_name text, cost_centre text, city text,
    vehicle_type text, period_s integer, driving_s integer, idle_s integer, parked_s integer,
    utilisation_pct numeric, idle_pct numeric)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    WITH lim AS (
        SELECT greatest(p_from, reporting.local_day(
                   least((SELECT min(start_time) FROM tracksolid.trips),
                         (SELECT min(start_time) FROM tracksolid.parking_events),
                         now()))) AS d0,
               least(p_to, reporting.local_day(now())) AS d1
    ), days AS (
        SELECT g::date AS day,
               least(86400, greatest(0, extract(epoch FROM
                   now() - reporting.local_day_start(g::date))))::integer AS period_s
        FROM lim, generate_series(lim.d0, lim.d1, interval '1 day') g
    ), bounds AS (
        SELECT reporting.local_day_start(d0) AS t0, reporting.local_day_start(d1 + 1) AS t1 FROM lim
    ), drive AS (
        SELECT reporting.local_day(t.start_time) AS day, t.imei,
               sum(coalesce(t.driving_time_s,
                            extract(epoch FROM t.end_time - t.start_time)::integer, 0)) AS s
        FROM tracksolid.trips t, bounds b
        WHERE t.start_time >= b.t0 AND t.start_time < b.t1
        GROUP BY 1, 2
    ), idle AS (
        SELECT reporting.local_day(p.start_time) AS day, p.imei,
               sum(coalesce(p.duration_s,
                            extract(epoch FROM coalesce(p.end_time, now()) - p.start_time)::integer,
                            0)) AS s
        FROM tracksolid.parking_events p, bounds b
        WHERE p.acc_on AND p.start_time >= b.t0 AND p.start_time < b.t1
        GROUP BY 1, 2
    ), base AS (
        SELECT days.day, d.imei, tracksolid.vehicle_label(d) AS vehicle_number, da.driver_name,
               d.cost_centre, d.city, d.vehicle_type, days.period_s,
               least(coalesce(dr.s, 0), days.period_s)::integer AS driving_s,
               least(coalesce(i.s, 0),
                     days.period_s - least(coalesce(dr.s, 0), days.period_s))::integer AS idle_s
        FROM days
        CROSS JOIN tracksolid.devices d
        LEFT JOIN drive dr ON dr.day = days.day AND dr.imei = d.imei
        LEFT JOIN idle i ON i.day = days.day AND i.imei = d.imei
        -- the vehicle's driver at the end of the day (today: now), driver_assignments
        LEFT JOIN LATERAL (
            SELECT a.driver_name FROM tracksolid.driver_assignments a
            WHERE a.imei = d.imei
              AND a.valid_from < least(reporting.local_day_start(days.day + 1), now())
              AND (a.valid_to IS NULL
                   OR a.valid_to >= least(reporting.local_day_start(days.day + 1), now()))
            ORDER BY a.valid_from DESC LIMIT 1
        ) da ON true
        WHERE d.is_active
    )
    SELECT base.day, base.imei, base.vehicle_number, base.driver_name, base.cost_centre,
           base.city, base.vehicle_type, base.period_s, base.driving_s, base.idle_s,
           (base.period_s - base.driving_s - base.idle_s)::integer,
           CASE WHEN base.period_s > 0
                THEN round(100.0 * base.driving_s / base.period_s, 1) END,
           CASE WHEN base.driving_s + base.idle_s > 0
                THEN round(100.0 * base.idle_s / (base.driving_s + base.idle_s), 1) END
    FROM base
$$;

-- Driver clock: first ignition-on (first trip start or idling stop, whichever is earlier) and
-- last stop (end of the last finished trip) per driver/vehicle per day; trips and idling stops
-- count for the driver assigned to the vehicle when they started (driver_assignments), so a
-- vehicle handed over at noon gives two rows that day.
CREATE OR REPLACE FUNCTION tracksolid.fn_driver_clock_daily(p_from date, p_to date)
RETURNS TABLE (
    day date, imei text, vehicle_number text, driver_name text, driver_phone text,
    cost_centre text, city text, first_ignition_on timestamptz, last_stop timestamptz,
    trips bigint, on_duty_s integer)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    WITH bounds AS (
        SELECT reporting.local_day_start(p_from) AS t0, reporting.local_day_start(p_to + 1) AS t1
    ), ev AS (
        SELECT reporting.local_day(t.start_time) AS day, t.imei, t.start_time AS on_at,
               t.end_time AS stop_at, 1 AS trips
        FROM tracksolid.trips t, bounds b
        WHERE t.start_time >= b.t0 AND t.start_time < b.t1
        UNION ALL
        SELECT reporting.local_day(p.start_time), p.imei, p.start_time, NULL, 0
        FROM tracksolid.parking_events p, bounds b
        WHERE p.acc_on AND p.start_time >= b.t0 AND p.start_time < b.t1
    ), agg AS (
        SELECT ev.day, ev.imei, da.driver_name, da.driver_phone, min(ev.on_at) AS first_on,
               max(ev.stop_at) AS last_stop, sum(ev.trips) AS trips
        FROM ev
        LEFT JOIN LATERAL (
            SELECT a.driver_name, a.driver_phone FROM tracksolid.driver_assignments a
            WHERE a.imei = ev.imei AND a.valid_from <= ev.on_at
              AND (a.valid_to IS NULL OR a.valid_to > ev.on_at)
            ORDER BY a.valid_from DESC LIMIT 1
        ) da ON true
        GROUP BY ev.day, ev.imei, da.driver_name, da.driver_phone
    )
    SELECT agg.day, agg.imei, tracksolid.vehicle_label(d), agg.driver_name, agg.driver_phone,
           d.cost_centre, d.city, agg.first_on, agg.last_stop, agg.trips,
           CASE WHEN agg.last_stop > agg.first_on
                THEN extract(epoch FROM agg.last_stop - agg.first_on)::integer END
    FROM agg
    LEFT JOIN tracksolid.devices d ON d.imei = agg.imei
$$;

-- Fleet distance per day and cost centre.
CREATE OR REPLACE FUNCTION tracksolid.fn_fleet_km_daily(p_from date, p_to date)
RETURNS TABLE (
    day date, cost_centre text, vehicles bigint, trips bigint, distance_km numeric,
    driving_time_s bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT reporting.local_day(t.start_time), d.cost_centre, count(DISTINCT t.imei), count(*),
           coalesce(sum(t.distance_km), 0), coalesce(sum(t.driving_time_s), 0)
    FROM tracksolid.trips t
    LEFT JOIN tracksolid.devices d ON d.imei = t.imei
    WHERE t.start_time >= reporting.local_day_start(p_from)
      AND t.start_time < reporting.local_day_start(p_to + 1)
    GROUP BY 1, 2
$$;

-- Alarm frequency per day, type and cost centre, with the type's kind ('alarm' | 'event') and
-- severity from tracksolid.alarm_types (0106; an unknown type counts as alarm / medium so it
-- never vanishes from the counts). `alarms` counts rows of either kind: filter on `kind`.
-- The kind/severity columns changed the result type: drop the old function (and its views,
-- re-created below) once, only when it lacks them.
DO $$
BEGIN
    IF to_regprocedure('tracksolid.fn_alarms_daily(date, date)') IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM pg_proc
                       WHERE oid = to_regprocedure('tracksolid.fn_alarms_daily(date, date)')
                         AND 'severity' = ANY (proargnames)) THEN
        DROP FUNCTION tracksolid.fn_alarms_daily(date, date) CASCADE;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION tracksolid.fn_alarms_daily(p_from date, p_to date)
RETURNS TABLE (
    day date, cost_centre text, alarm_type text, alarm_name text, category text,
    alarms bigint, vehicles bigint, kind text, severity text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT reporting.local_day(a.alarm_time), d.cost_centre, a.alarm_type,
           coalesce(max(a.alarm_name), max(t.name)),
           reporting.alarm_category(a.alarm_type, max(a.alarm_name)),
           count(*), count(DISTINCT a.imei),
           coalesce(max(t.kind), 'alarm'), coalesce(max(t.severity), 'medium')
    FROM tracksolid.alarms a
    LEFT JOIN tracksolid.devices d ON d.imei = a.imei
    LEFT JOIN tracksolid.alarm_types t ON t.alarm_type = a.alarm_type
    WHERE a.alarm_time >= reporting.local_day_start(p_from)
      AND a.alarm_time < reporting.local_day_start(p_to + 1)
    GROUP BY 1, 2, 3
$$;

-- Seed 002 (DATA_FLOW L3) fleet trace: the high-resolution GPS trail of every active vehicle
-- in [p_from, p_to): plausible fixes only (quality_flag IS NULL), numbered per vehicle, with
-- the driver assigned at each fix and the seconds since the previous fix (a gap shows where
-- the trail is interrupted). Reads position_history by time, so keep the window short.
CREATE OR REPLACE FUNCTION tracksolid.fn_fleet_trace(p_from timestamptz, p_to timestamptz)
RETURNS TABLE (
    imei text, vehicle_number text, driver_name text, cost_centre text, city text, day date,
    seq bigint, gps_time timestamptz, lat double precision, lng double precision,
    speed_kmh real, direction_deg smallint, acc_on boolean, source text, gap_s integer)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT ph.imei, tracksolid.vehicle_label(d), da.driver_name, d.cost_centre, d.city,
           reporting.local_day(ph.gps_time),
           row_number() OVER w, ph.gps_time, ph.lat, ph.lng, ph.speed_kmh, ph.direction_deg,
           ph.acc_on, ph.source,
           extract(epoch FROM ph.gps_time - lag(ph.gps_time) OVER w)::integer
    FROM tracksolid.position_history ph
    JOIN tracksolid.devices d ON d.imei = ph.imei AND d.is_active
    LEFT JOIN tracksolid.driver_assignments da
           ON da.imei = ph.imei AND da.valid_from <= ph.gps_time
          AND (da.valid_to IS NULL OR da.valid_to > ph.gps_time)
    WHERE ph.gps_time >= p_from AND ph.gps_time < p_to AND ph.quality_flag IS NULL
    WINDOW w AS (PARTITION BY ph.imei ORDER BY ph.gps_time)
$$;

-- Seed 002 (DATA_FLOW L3) driver clock attendance: per EAT day, every driver assigned to an
-- active vehicle for some of that day (driver_assignments) — attended when the vehicle had
-- ignition-on activity attributed to that driver (fn_driver_clock_daily), with clock-in
-- (first ignition-on) and clock-out (last stop) in EAT wall-clock time; absent otherwise.
-- Days before the first stored trip / stop and after today are not listed.
CREATE OR REPLACE FUNCTION tracksolid.fn_driver_clock_attnd(p_from date, p_to date)
RETURNS TABLE (
    day date, driver_name text, driver_phone text, imei text, vehicle_number text,
    cost_centre text, city text, attended boolean, first_ignition_on timestamptz,
    last_stop timestamptz, clock_in_eat time, clock_out_eat time, on_duty_s integer,
    trips bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    WITH lim AS (
        SELECT greatest(p_from, reporting.local_day(
                   least((SELECT min(start_time) FROM tracksolid.trips),
                         (SELECT min(start_time) FROM tracksolid.parking_events),
                         now()))) AS d0,
               least(p_to, reporting.local_day(now())) AS d1
    ), roster AS (
        SELECT g::date AS day, a.imei, a.driver_name, a.driver_phone
        FROM lim, generate_series(lim.d0, lim.d1, interval '1 day') g
        JOIN tracksolid.driver_assignments a
          ON a.valid_from < reporting.local_day_start(g::date + 1)
         AND (a.valid_to IS NULL OR a.valid_to > reporting.local_day_start(g::date))
    ), clock AS (
        SELECT c.* FROM lim, tracksolid.fn_driver_clock_daily(lim.d0, lim.d1) c
    )
    SELECT r.day, r.driver_name, coalesce(c.driver_phone, r.driver_phone), r.imei,
           tracksolid.vehicle_label(d), d.cost_centre, d.city, c.imei IS NOT NULL,
           c.first_ignition_on, c.last_stop,
           (c.first_ignition_on AT TIME ZONE 'Africa/Nairobi')::time,
           (c.last_stop AT TIME ZONE 'Africa/Nairobi')::time,
           c.on_duty_s, coalesce(c.trips, 0)
    FROM roster r
    JOIN tracksolid.devices d ON d.imei = r.imei AND d.is_active
    LEFT JOIN clock c ON c.day = r.day AND c.imei = r.imei AND c.driver_name = r.driver_name
$$;

-- ── The views (seed 000 §5) ───────────────────────────────────────────────────────────────

CREATE OR REPLACE VIEW tracksolid.v_driver_aggregates_daily AS
SELECT * FROM tracksolid.fn_driver_aggregates_daily('-infinity', 'infinity');
COMMENT ON VIEW tracksolid.v_driver_aggregates_daily IS
    'seed 000 §5 (§3.1+§3.2): trips, km, harsh accel/braking/overspeed and aggression index '
    '(those alarms per 100 km) per driver/vehicle per EAT day.';

CREATE OR REPLACE VIEW tracksolid.v_utilisation_daily AS
SELECT * FROM tracksolid.fn_utilisation_daily('-infinity', 'infinity');
COMMENT ON VIEW tracksolid.v_utilisation_daily IS
    'Driving vs idle (ignition on, not moving) vs parked seconds per active vehicle per EAT day.';

CREATE OR REPLACE VIEW tracksolid.v_driver_clock_daily AS
SELECT * FROM tracksolid.fn_driver_clock_daily('-infinity', 'infinity');
COMMENT ON VIEW tracksolid.v_driver_clock_daily IS
    'First ignition-on and last stop per driver/vehicle per EAT day.';

CREATE OR REPLACE VIEW tracksolid.v_driver_clock_today AS
SELECT * FROM tracksolid.fn_driver_clock_daily(reporting.local_day(now()), reporting.local_day(now()));
COMMENT ON VIEW tracksolid.v_driver_clock_today IS 'v_driver_clock_daily for today (EAT).';

CREATE OR REPLACE VIEW tracksolid.v_fleet_km_daily AS
SELECT * FROM tracksolid.fn_fleet_km_daily('-infinity', 'infinity');
COMMENT ON VIEW tracksolid.v_fleet_km_daily IS 'seed 000 §5 (§7 panel 5): km per EAT day and cost centre.';

CREATE OR REPLACE VIEW tracksolid.v_alarms_daily AS
SELECT * FROM tracksolid.fn_alarms_daily('-infinity', 'infinity') WHERE kind = 'alarm';
COMMENT ON VIEW tracksolid.v_alarms_daily IS
    'seed 000 §5 (§7 panel 7): alarms per EAT day, type and cost centre, with severity; '
    'kind alarm only (ignition, geofence in/out... are in v_events_daily; tracksolid.alarm_types).';

CREATE OR REPLACE VIEW tracksolid.v_events_daily AS
SELECT * FROM tracksolid.fn_alarms_daily('-infinity', 'infinity') WHERE kind = 'event';
COMMENT ON VIEW tracksolid.v_events_daily IS
    'Alarm-table rows classified as events (ignition ACC_ON/ACC_OFF, geofence in/out, booting...) '
    'per EAT day, type and cost centre (tracksolid.alarm_types); never counted as alarms.';

-- Live state of every active vehicle (the base of the live lenses below).
CREATE OR REPLACE VIEW tracksolid.v_fleet_status_detail AS
SELECT d.imei, tracksolid.vehicle_label(d) AS vehicle_number, d.vehicle_name, d.driver_name,
       d.driver_phone, d.cost_centre, d.city, d.vehicle_type,
       lp.gps_time, lp.lat, lp.lng, lp.speed_kmh, lp.direction_deg, lp.acc_on, lp.online,
       lp.loc_desc,
       reporting.vehicle_status(lp.online, lp.acc_on, lp.speed_kmh, lp.gps_time) AS status,
       extract(epoch FROM now() - lp.gps_time)::integer AS fix_age_s
FROM tracksolid.devices d
LEFT JOIN tracksolid.live_positions lp ON lp.imei = d.imei
WHERE d.is_active;

CREATE OR REPLACE VIEW tracksolid.v_fleet_status AS
SELECT CASE WHEN grouping(cost_centre) = 1 THEN 'fleet' ELSE 'cost_centre' END AS scope,
       cost_centre,
       count(*) AS vehicles,
       count(*) FILTER (WHERE status = 'moving')  AS moving,
       count(*) FILTER (WHERE status = 'idle')    AS idle,
       count(*) FILTER (WHERE status = 'parked')  AS parked,
       count(*) FILTER (WHERE status = 'offline') AS offline,
       count(*) FILTER (WHERE status = 'no_fix')  AS no_fix
FROM tracksolid.v_fleet_status_detail
GROUP BY GROUPING SETS ((cost_centre), ());
COMMENT ON VIEW tracksolid.v_fleet_status IS
    'Active vehicles by live status (moving / idle / parked / offline / no_fix), per cost centre and fleet-wide.';

CREATE OR REPLACE VIEW tracksolid.v_fleet_today AS
WITH b AS (SELECT reporting.local_day_start(reporting.local_day(now())) AS t0),
tr AS (
    SELECT t.imei, count(*) AS trips, coalesce(sum(t.distance_km), 0) AS km,
           coalesce(sum(t.driving_time_s), 0) AS driving_s, max(t.max_speed_kmh) AS vmax,
           min(t.start_time) AS first_start, max(t.end_time) AS last_end
    FROM tracksolid.trips t, b WHERE t.start_time >= b.t0 GROUP BY t.imei
), al AS (
    -- alarms vs events by tracksolid.alarm_types (0106); an unknown type is an alarm
    SELECT a.imei, count(*) FILTER (WHERE coalesce(t.kind, 'alarm') = 'alarm') AS alarms,
           count(*) FILTER (WHERE t.kind = 'event') AS events
    FROM tracksolid.alarms a
    CROSS JOIN b
    LEFT JOIN tracksolid.alarm_types t ON t.alarm_type = a.alarm_type
    WHERE a.alarm_time >= b.t0 GROUP BY a.imei
), idl AS (
    SELECT p.imei, sum(coalesce(p.duration_s,
               extract(epoch FROM coalesce(p.end_time, now()) - p.start_time)::integer)) AS idle_s
    FROM tracksolid.parking_events p, b
    WHERE p.acc_on AND p.start_time >= b.t0 GROUP BY p.imei
)
SELECT s.imei, s.vehicle_number, s.driver_name, s.cost_centre, s.city, s.vehicle_type,
       coalesce(tr.trips, 0) AS trips_today, coalesce(tr.km, 0) AS km_today,
       coalesce(tr.driving_s, 0) AS driving_time_s_today, tr.vmax AS max_speed_kmh_today,
       coalesce(idl.idle_s, 0) AS idle_s_today, coalesce(al.alarms, 0) AS alarms_today,
       tr.first_start AS first_trip_start, tr.last_end AS last_trip_end,
       s.gps_time AS last_fix, s.status, coalesce(al.events, 0) AS events_today
FROM tracksolid.v_fleet_status_detail s
LEFT JOIN tr ON tr.imei = s.imei
LEFT JOIN al ON al.imei = s.imei
LEFT JOIN idl ON idl.imei = s.imei;
COMMENT ON VIEW tracksolid.v_fleet_today IS 'seed 000 §5 (§9): per-vehicle roll-up of today (EAT).';

CREATE OR REPLACE VIEW tracksolid.v_vehicles_not_moved_today AS
SELECT f.imei, f.vehicle_number, f.driver_name, f.driver_phone, f.cost_centre, f.city,
       f.status, f.gps_time AS last_fix, lt.end_time AS last_trip_end,
       (reporting.local_day(now()) - reporting.local_day(lt.start_time)) AS days_since_last_trip
FROM tracksolid.v_fleet_status_detail f
LEFT JOIN LATERAL (
    SELECT t.start_time, t.end_time FROM tracksolid.trips t
    WHERE t.imei = f.imei ORDER BY t.start_time DESC LIMIT 1
) lt ON true
WHERE lt.start_time IS NULL
   OR lt.start_time < reporting.local_day_start(reporting.local_day(now()));
COMMENT ON VIEW tracksolid.v_vehicles_not_moved_today IS
    'seed 000 §5 (§2.3): active vehicles without a trip today (EAT) — the alert source.';

CREATE OR REPLACE VIEW tracksolid.v_active_dispatch_map AS
SELECT s.imei, s.vehicle_number, s.driver_name, s.driver_phone, s.cost_centre, s.city,
       s.vehicle_type, s.lat, s.lng, s.speed_kmh, s.direction_deg, s.status, s.gps_time,
       s.fix_age_s, s.loc_desc
FROM tracksolid.v_fleet_status_detail s
WHERE s.status IN ('moving', 'idle', 'parked');
COMMENT ON VIEW tracksolid.v_active_dispatch_map IS
    'seed 000 §5 (§4.3): reporting vehicles with position and status, the dispatch geomap source.';

CREATE OR REPLACE VIEW tracksolid.v_currently_idle AS
SELECT s.imei, s.vehicle_number, s.driver_name, s.driver_phone, s.cost_centre, s.city,
       s.lat, s.lng, s.gps_time, s.loc_desc,
       coalesce(ev.start_time, s.gps_time) AS idle_since,
       extract(epoch FROM now() - coalesce(ev.start_time, s.gps_time))::integer AS idle_s
FROM tracksolid.v_fleet_status_detail s
LEFT JOIN LATERAL (
    SELECT p.start_time FROM tracksolid.parking_events p
    WHERE p.imei = s.imei AND p.acc_on AND p.start_time <= s.gps_time
      AND (p.end_time IS NULL OR p.end_time >= s.gps_time - interval '5 minutes')
    ORDER BY p.start_time DESC LIMIT 1
) ev ON true
WHERE s.status = 'idle';
COMMENT ON VIEW tracksolid.v_currently_idle IS
    'seed 000 §5 (§2.2): vehicles with ignition on and not moving now, with since when.';

-- ── The seed 002 views (DATA_FLOW L3) ─────────────────────────────────────────────────────

CREATE OR REPLACE VIEW tracksolid.v_fleet_trace AS
SELECT * FROM tracksolid.fn_fleet_trace(now() - interval '24 hours', now() + interval '1 minute');
COMMENT ON VIEW tracksolid.v_fleet_trace IS
    'seed 002 (DATA_FLOW L3): GPS trail of every active vehicle over the last 24 h — plausible '
    'fixes in order (seq), driver at each fix, gap_s since the previous fix. Other windows: '
    'tracksolid.fn_fleet_trace(from, to).';

CREATE OR REPLACE VIEW tracksolid.v_driver_clock_attnd AS
SELECT * FROM tracksolid.fn_driver_clock_attnd('-infinity', 'infinity');
COMMENT ON VIEW tracksolid.v_driver_clock_attnd IS
    'seed 002 (DATA_FLOW L3): per EAT day, every driver assigned to an active vehicle — '
    'attended (ignition-on activity of theirs that day) or not, clock-in / clock-out (EAT), '
    'on-duty seconds and trips; the attendance side of v_driver_clock_daily.';

-- ── reporting.* wrappers readable by dashboard_ro (views run with their owner's rights) ──

CREATE OR REPLACE VIEW reporting.v_fleet_today AS SELECT * FROM tracksolid.v_fleet_today;
CREATE OR REPLACE VIEW reporting.v_fleet_status AS SELECT * FROM tracksolid.v_fleet_status;
CREATE OR REPLACE VIEW reporting.v_vehicles_not_moved_today AS
    SELECT * FROM tracksolid.v_vehicles_not_moved_today;
CREATE OR REPLACE VIEW reporting.v_active_dispatch_map AS
    SELECT * FROM tracksolid.v_active_dispatch_map;
CREATE OR REPLACE VIEW reporting.v_currently_idle AS SELECT * FROM tracksolid.v_currently_idle;
CREATE OR REPLACE VIEW reporting.v_driver_aggregates_daily AS
    SELECT * FROM tracksolid.v_driver_aggregates_daily;
CREATE OR REPLACE VIEW reporting.v_utilisation_daily AS
    SELECT * FROM tracksolid.v_utilisation_daily;
CREATE OR REPLACE VIEW reporting.v_driver_clock_daily AS
    SELECT * FROM tracksolid.v_driver_clock_daily;
CREATE OR REPLACE VIEW reporting.v_driver_clock_today AS
    SELECT * FROM tracksolid.v_driver_clock_today;
CREATE OR REPLACE VIEW reporting.v_fleet_km_daily AS SELECT * FROM tracksolid.v_fleet_km_daily;
CREATE OR REPLACE VIEW reporting.v_alarms_daily AS SELECT * FROM tracksolid.v_alarms_daily;
CREATE OR REPLACE VIEW reporting.v_events_daily AS SELECT * FROM tracksolid.v_events_daily;
CREATE OR REPLACE VIEW reporting.v_fleet_trace AS SELECT * FROM tracksolid.v_fleet_trace;
CREATE OR REPLACE VIEW reporting.v_driver_clock_attnd AS
    SELECT * FROM tracksolid.v_driver_clock_attnd;
