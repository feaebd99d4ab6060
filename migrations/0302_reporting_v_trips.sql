-- 0302 · reporting.v_trips: trips joined with the vehicle/driver registry (seed 002 DATA_FLOW
-- L2). A materialized view so the trips map never joins on the fly; the unique index on
-- trip_id lets dashboard_api refresh it CONCURRENTLY (readers are never blocked).
-- `trip_day` is the East-Africa (EAT, UTC+3, no DST) calendar day of the start: the fleet's
-- operational day, used by the daily/weekly/monthly summaries.
-- Created WITH DATA: a CONCURRENT refresh refuses an unpopulated view.

CREATE MATERIALIZED VIEW IF NOT EXISTS reporting.v_trips AS
SELECT
    t.trip_id,
    t.imei,
    coalesce(nullif(d.vehicle_number, ''), nullif(d.vehicle_name, ''), t.imei) AS vehicle_number,
    d.vehicle_name,
    d.plate_norm,
    d.driver_name,
    d.driver_phone,
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
WITH DATA;

CREATE UNIQUE INDEX IF NOT EXISTS ix_v_trips_trip_id ON reporting.v_trips (trip_id);
CREATE INDEX IF NOT EXISTS ix_v_trips_start ON reporting.v_trips (start_time);
CREATE INDEX IF NOT EXISTS ix_v_trips_cc_start ON reporting.v_trips (lower(cost_centre), start_time);
CREATE INDEX IF NOT EXISTS ix_v_trips_plate_start ON reporting.v_trips (plate_norm, start_time);
CREATE INDEX IF NOT EXISTS ix_v_trips_day ON reporting.v_trips (trip_day);

COMMENT ON MATERIALIZED VIEW reporting.v_trips IS
    'trips ⨝ devices for the trips map (seed 002 DATA_FLOW L2); refreshed CONCURRENTLY by '
    'dashboard_api every VTRIPS_REFRESH_INTERVAL_S under advisory lock 920145 (FIX-D02).';
