-- Repeatable · Fuel read views for FleetOps and dashboard_api (seed 004). Edit freely: the
-- runner re-applies this file when it changes. Views read fuel.* and tracksolid.* with their
-- owner's rights, so dashboard_ro needs only SELECT on reporting (granted by the runner).
-- Soft-deleted records (deleted_at) and records absent from the latest snapshot
-- (missing_since) are excluded everywhere.
--
-- Efficiency rules (reporting.v_fuel_efficiency), documented in docs/fuel.md:
--   * fills of a vehicle are ordered by fill time; a fill's litres belong to the distance
--     driven since the previous fill (fill-to-full assumption), so the first fill has none;
--   * odometer distance = this odometer - previous odometer;
--   * GPS distance = sum of tracksolid.trips.distance_km with start_time in (prev fill, fill];
--     when no trip is recorded there, the length on the WGS84 spheroid of the line through the
--     moving fixes (speed > 2 km/h or unknown, no quality flag, no 0,0) of position_history;
--   * a value is plausible between 2 and 60 L/100 km; flags explain every rejection.
-- CREATE OR REPLACE can only append columns: to rename/remove one, add a DROP VIEW IF EXISTS
-- for the dependent views (daily, efficiency, fills) at the top of this file.

CREATE OR REPLACE VIEW reporting.v_fuel_fills AS
WITH dev AS (
    -- One device per plate: the active, most recently updated one wins (a replaced tracker
    -- leaves two rows with the same vehicle number).
    SELECT DISTINCT ON (fuel.norm_plate(d.vehicle_number))
           fuel.norm_plate(d.vehicle_number) AS plate_key,
           d.imei, d.vehicle_number, d.cost_centre, d.city, d.vehicle_type,
           d.fuel_100km_l
    FROM tracksolid.devices AS d
    WHERE fuel.norm_plate(d.vehicle_number) IS NOT NULL
    ORDER BY fuel.norm_plate(d.vehicle_number), d.is_active DESC, d.updated_at DESC, d.imei
)
SELECT r.id                                             AS fill_id,
       r.filled_at,
       (r.filled_at AT TIME ZONE 'Africa/Nairobi')::date AS fill_date,
       r.plate_raw                                      AS car,
       r.plate_norm,
       coalesce(dev.vehicle_number, r.plate_raw)        AS vehicle_number,
       dev.imei,
       dev.cost_centre,
       dev.city,
       dev.vehicle_type,
       dev.fuel_100km_l                                 AS nominal_l_per_100km,
       r.litres,
       r.amount_kes,
       r.price_per_litre_kes,
       r.odometer_km,
       r.fuel_type,
       r.fuel_type_raw,
       r.driver,
       r.department,
       r.department_raw,
       (dev.imei IS NOT NULL)                           AS matched_device,
       r.parse_issues,
       r.updated_at
FROM fuel.records AS r
LEFT JOIN dev ON dev.plate_key = r.plate_norm
WHERE r.deleted_at IS NULL
  AND r.missing_since IS NULL;

COMMENT ON VIEW reporting.v_fuel_fills IS 'Live fuel fills joined to the fleet registry by normalised plate (cost centre, city, IMEI).';

CREATE OR REPLACE VIEW reporting.v_fuel_efficiency AS
WITH f AS (
    SELECT fl.*,
           lag(fl.fill_id)     OVER w AS prev_fill_id,
           lag(fl.filled_at)   OVER w AS prev_filled_at,
           lag(fl.odometer_km) OVER w AS prev_odometer_km
    FROM reporting.v_fuel_fills AS fl
    WHERE fl.plate_norm IS NOT NULL AND fl.filled_at IS NOT NULL
    WINDOW w AS (PARTITION BY fl.plate_norm ORDER BY fl.filled_at, fl.fill_id)
),
d AS (
    SELECT f.*,
           f.odometer_km - f.prev_odometer_km AS odo_distance_km,
           tr.trips,
           tr.km AS trips_km,
           ph.km AS positions_km
    FROM f
    LEFT JOIN LATERAL (
        SELECT count(*) AS trips, sum(t.distance_km)::numeric AS km
        FROM tracksolid.trips AS t
        WHERE t.imei = f.imei
          AND t.start_time > f.prev_filled_at
          AND t.start_time <= f.filled_at
    ) AS tr ON true
    LEFT JOIN LATERAL (
        SELECT (ST_Length(ST_MakeLine(ST_SetSRID(ST_MakePoint(p.lng, p.lat), 4326)
                                      ORDER BY p.gps_time)::geography) / 1000.0)::numeric AS km
        FROM tracksolid.position_history AS p
        WHERE tr.trips = 0
          AND p.imei = f.imei
          AND p.gps_time > f.prev_filled_at
          AND p.gps_time <= f.filled_at
          AND p.quality_flag IS NULL
          AND NOT (p.lat = 0 AND p.lng = 0)
          AND (p.speed_kmh IS NULL OR p.speed_kmh > 2)
        HAVING count(*) >= 2
    ) AS ph ON true
),
e AS (
    SELECT d.*,
           CASE WHEN d.trips > 0 THEN d.trips_km ELSE d.positions_km END AS gps_distance_km,
           CASE WHEN d.trips > 0 THEN 'trips'
                WHEN d.positions_km IS NOT NULL THEN 'positions' END AS gps_distance_source
    FROM d
),
m AS (
    SELECT e.*,
           CASE WHEN e.prev_fill_id IS NOT NULL AND e.odo_distance_km > 0 AND e.litres > 0
                THEN round(e.litres / e.odo_distance_km * 100, 2) END AS l_per_100km_odo,
           CASE WHEN e.prev_fill_id IS NOT NULL AND e.gps_distance_km > 0 AND e.litres > 0
                THEN round(e.litres / e.gps_distance_km * 100, 2) END AS l_per_100km_gps
    FROM e
)
SELECT m.plate_norm,
       m.vehicle_number,
       m.imei,
       m.cost_centre,
       m.city,
       m.vehicle_type,
       m.fill_id,
       m.filled_at,
       m.fill_date,
       m.prev_fill_id,
       m.prev_filled_at,
       m.litres,
       m.amount_kes,
       m.odometer_km,
       m.prev_odometer_km,
       m.odo_distance_km,
       round(m.gps_distance_km, 3)                         AS gps_distance_km,
       m.gps_distance_source,
       m.l_per_100km_odo,
       m.l_per_100km_gps,
       m.nominal_l_per_100km,
       (m.l_per_100km_odo BETWEEN 2 AND 60)                AS odo_plausible,
       (m.l_per_100km_gps BETWEEN 2 AND 60)                AS gps_plausible,
       array_remove(ARRAY[
           CASE WHEN m.prev_fill_id IS NULL THEN 'first_fill' END,
           CASE WHEN m.prev_fill_id IS NOT NULL AND (m.odometer_km IS NULL OR m.prev_odometer_km IS NULL)
                THEN 'odometer_missing' END,
           CASE WHEN m.odo_distance_km <= 0 THEN 'odometer_not_increasing' END,
           CASE WHEN m.odo_distance_km > 5000 THEN 'odometer_jump' END,
           CASE WHEN m.prev_fill_id IS NOT NULL AND m.imei IS NULL THEN 'no_device' END,
           CASE WHEN m.prev_fill_id IS NOT NULL AND m.imei IS NOT NULL AND m.gps_distance_km IS NULL
                THEN 'gps_distance_missing' END,
           CASE WHEN m.l_per_100km_odo < 2 OR m.l_per_100km_odo > 60 THEN 'implausible_odo' END,
           CASE WHEN m.l_per_100km_gps < 2 OR m.l_per_100km_gps > 60 THEN 'implausible_gps' END,
           CASE WHEN m.odo_distance_km > 10 AND m.gps_distance_km > 10
                 AND abs(m.odo_distance_km - m.gps_distance_km) > 0.25 * m.gps_distance_km
                THEN 'odo_gps_mismatch' END,
           CASE WHEN m.litres > 400 THEN 'litres_over_tank' END
       ], NULL)                                            AS flags
FROM m;

COMMENT ON VIEW reporting.v_fuel_efficiency IS 'Per vehicle and fill: L/100 km since the previous fill, by odometer and by GPS (trips, else positions), with plausibility flags.';

CREATE OR REPLACE VIEW reporting.v_fuel_daily AS
SELECT fl.fill_date                                          AS day,
       fl.plate_norm,
       max(fl.vehicle_number)                                AS vehicle_number,
       max(fl.imei)                                          AS imei,
       max(fl.cost_centre)                                   AS cost_centre,
       max(fl.city)                                          AS city,
       count(*)                                              AS fills,
       sum(fl.litres)                                        AS litres,
       sum(fl.amount_kes)                                    AS amount_kes,
       round(sum(fl.amount_kes) FILTER (WHERE fl.litres > 0)
             / nullif(sum(fl.litres) FILTER (WHERE fl.amount_kes IS NOT NULL), 0), 2)
                                                             AS price_per_litre_kes,
       coalesce(sum(fl.litres) FILTER (WHERE fl.fuel_type = 'DIESEL'), 0) AS diesel_litres,
       coalesce(sum(fl.litres) FILTER (WHERE fl.fuel_type = 'PETROL'), 0) AS petrol_litres,
       array_agg(DISTINCT fl.department) FILTER (WHERE fl.department IS NOT NULL) AS departments,
       array_agg(DISTINCT fl.driver) FILTER (WHERE fl.driver IS NOT NULL)         AS drivers
FROM reporting.v_fuel_fills AS fl
WHERE fl.fill_date IS NOT NULL
GROUP BY fl.fill_date, fl.plate_norm;

COMMENT ON VIEW reporting.v_fuel_daily IS 'FleetOps: fuel spend per day (East Africa Time) and vehicle.';
