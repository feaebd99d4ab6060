-- 0303 · reporting.v_trips attributes each trip to the driver assigned to the vehicle when the
-- trip started (tracksolid.driver_assignments, 0105), no longer to the vehicle's current
-- driver: when a vehicle changes hands, its old trips keep their driver (issue #15).
-- Same columns, same indexes as 0302. A materialized view cannot be replaced in place, so it
-- is dropped and created again; the views that read it (the trip summaries of
-- R__reporting_core.sql, or any an operator added) are saved with their definitions and
-- comments and created again after it, so the database never lacks them, even when that
-- repeatable file is not re-applied in the same run.

CREATE TEMP TABLE _v_trips_dependants ON COMMIT DROP AS
WITH RECURSIVE dep AS (
    SELECT DISTINCT r.ev_class AS oid, 1 AS depth
    FROM pg_depend d
    JOIN pg_rewrite r ON r.oid = d.objid
    WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = 'reporting.v_trips'::regclass
      AND r.ev_class <> 'reporting.v_trips'::regclass
    UNION
    SELECT r.ev_class, dep.depth + 1
    FROM dep
    JOIN pg_depend d ON d.refobjid = dep.oid AND d.classid = 'pg_rewrite'::regclass
    JOIN pg_rewrite r ON r.oid = d.objid
    WHERE r.ev_class <> dep.oid
)
SELECT c.oid::regclass::text AS name, c.relkind, max(dep.depth) AS depth,
       pg_get_viewdef(c.oid) AS definition, obj_description(c.oid, 'pg_class') AS comment
FROM dep JOIN pg_class c ON c.oid = dep.oid
GROUP BY c.oid, c.relkind;

DROP MATERIALIZED VIEW reporting.v_trips CASCADE;

CREATE MATERIALIZED VIEW reporting.v_trips AS
SELECT
    t.trip_id,
    t.imei,
    coalesce(nullif(d.vehicle_number, ''), nullif(d.vehicle_name, ''), t.imei) AS vehicle_number,
    d.vehicle_name,
    d.plate_norm,
    da.driver_name,
    da.driver_phone,
    d.cost_centre,
    d.city,
    d.vehicle_type,
    d.account,
    coalesce(d.is_active, true)                                 AS is_active,
    t.start_time,
    t.end_time,
    (t.start_time AT TIME ZONE 'Africa/Nairobi')::date          AS trip_day,
    t.start_lat,
    t.start_lng,
    t.end_lat,
    t.end_lng,
    t.distance_km,
    t.driving_time_s,
    CASE WHEN t.end_time IS NOT NULL
         THEN extract(epoch FROM t.end_time - t.start_time)::integer END AS duration_s,
    t.avg_speed_kmh,
    t.max_speed_kmh,
    t.fuel_l,
    t.source
FROM tracksolid.trips t
LEFT JOIN tracksolid.devices d ON d.imei = t.imei
LEFT JOIN LATERAL (
    SELECT a.driver_name, a.driver_phone FROM tracksolid.driver_assignments a
    WHERE a.imei = t.imei AND a.valid_from <= t.start_time
      AND (a.valid_to IS NULL OR a.valid_to > t.start_time)
    ORDER BY a.valid_from DESC LIMIT 1
) da ON true
WITH DATA;

CREATE UNIQUE INDEX IF NOT EXISTS ix_v_trips_trip_id ON reporting.v_trips (trip_id);
CREATE INDEX IF NOT EXISTS ix_v_trips_start ON reporting.v_trips (start_time);
CREATE INDEX IF NOT EXISTS ix_v_trips_cc_start ON reporting.v_trips (lower(cost_centre), start_time);
CREATE INDEX IF NOT EXISTS ix_v_trips_plate_start ON reporting.v_trips (plate_norm, start_time);
CREATE INDEX IF NOT EXISTS ix_v_trips_day ON reporting.v_trips (trip_day);

COMMENT ON MATERIALIZED VIEW reporting.v_trips IS
    'trips ⨝ devices for the trips map (seed 002 DATA_FLOW L2), driver = the one assigned to '
    'the vehicle at the trip''s start (tracksolid.driver_assignments); refreshed CONCURRENTLY '
    'by dashboard_api every VTRIPS_REFRESH_INTERVAL_S under advisory lock 920145 (FIX-D02).';

DO $$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT * FROM _v_trips_dependants ORDER BY depth, name LOOP
        EXECUTE format('CREATE %s VIEW %s AS %s',
                       CASE WHEN v.relkind = 'm' THEN 'MATERIALIZED' ELSE '' END,
                       v.name, v.definition);
        IF v.comment IS NOT NULL THEN
            EXECUTE format('COMMENT ON %s VIEW %s IS %L',
                           CASE WHEN v.relkind = 'm' THEN 'MATERIALIZED' ELSE '' END,
                           v.name, v.comment);
        END IF;
    END LOOP;
END
$$;
