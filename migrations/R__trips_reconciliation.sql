-- Repeatable · reporting.v_trip_reconciliation: per vehicle and EAT day, the trips the API
-- reported against the trips derived from positions (trips/derive.py, migration 0104), so a
-- broken or empty trip feed is visible. docs/ingestion.md, "Trip speeds and derived trips".
-- Plain SQL: the same text runs on TimescaleDB and on plain PostgreSQL. A view in
-- `reporting` reads the base tables with its owner's rights: dashboard_ro may read it.
--
-- api_*      trips with source <> 'derived' (mileage poll, push)
-- derived_*  every segment the derivation found (tracksolid.derived_trips), filled or not
-- filled_*   derived trips copied into tracksolid.trips because the API had none there
-- disagrees  the two sources differ beyond the tolerance: one of them has nothing while the
--            other has trips, or the trip counts differ by more than 1 and the distances by
--            more than 20 % (at least 2 km). Short stops the API splits on and the
--            derivation merges (TRIP_MIN_STOP_S) make small count differences normal.

CREATE OR REPLACE VIEW reporting.v_trip_reconciliation AS
WITH per_day AS (
    SELECT u.imei, u.day,
           sum(u.api_n)::integer            AS api_trips,
           sum(u.api_km)::numeric(12,3)     AS api_km,
           sum(u.derived_n)::integer        AS derived_trips,
           sum(u.derived_km)::numeric(12,3) AS derived_km,
           sum(u.filled_n)::integer         AS filled_trips,
           sum(u.filled_km)::numeric(12,3)  AS filled_km
    FROM (
        SELECT t.imei, (t.start_time AT TIME ZONE 'Africa/Nairobi')::date AS day,
               (t.source <> 'derived')::int AS api_n,
               CASE WHEN t.source <> 'derived' THEN coalesce(t.distance_km, 0) ELSE 0 END AS api_km,
               0 AS derived_n, 0::numeric AS derived_km,
               (t.source = 'derived')::int AS filled_n,
               CASE WHEN t.source = 'derived' THEN coalesce(t.distance_km, 0) ELSE 0 END AS filled_km
        FROM tracksolid.trips t
        UNION ALL
        SELECT d.imei, (d.start_time AT TIME ZONE 'Africa/Nairobi')::date,
               0, 0, 1, d.distance_km, 0, 0
        FROM tracksolid.derived_trips d
    ) u
    GROUP BY u.imei, u.day
)
SELECT p.imei,
       coalesce(nullif(dev.vehicle_number, ''), nullif(dev.vehicle_name, ''), p.imei) AS vehicle_number,
       dev.cost_centre,
       p.day,
       p.api_trips, p.api_km,
       p.derived_trips, p.derived_km,
       p.filled_trips, p.filled_km,
       p.api_trips - p.derived_trips AS trips_diff,
       p.api_km - p.derived_km       AS km_diff,
       ((p.api_trips = 0) <> (p.derived_trips = 0)
        OR (abs(p.api_trips - p.derived_trips) > 1
            AND abs(p.api_km - p.derived_km) > greatest(2, 0.2 * greatest(p.api_km, p.derived_km))))
           AS disagrees,
       CASE WHEN p.api_trips = 0 AND p.derived_trips > 0 THEN 'no_api_trips'
            WHEN p.derived_trips = 0 AND p.api_trips > 0 THEN 'no_derived_trips'
            WHEN abs(p.api_trips - p.derived_trips) > 1
                 AND abs(p.api_km - p.derived_km) > greatest(2, 0.2 * greatest(p.api_km, p.derived_km))
                THEN 'count_and_km_differ'
       END AS reason
FROM per_day p
LEFT JOIN tracksolid.devices dev ON dev.imei = p.imei;

COMMENT ON VIEW reporting.v_trip_reconciliation IS
    'Per vehicle and EAT day: API trips vs trips derived from positions (count, km), the derived '
    'gap fills, and disagrees/reason when they differ beyond the tolerance (one side empty, or '
    'counts differ by > 1 and km by > max(2 km, 20 %)). docs/ingestion.md.';
