-- migrate: requires-no-extension timescaledb
-- 0004 (plain PostgreSQL variant) · the same daily roll-up as an ordinary materialized view,
-- same name and columns, refreshed by `REFRESH MATERIALIZED VIEW CONCURRENTLY` (unique index).

CREATE MATERIALIZED VIEW tracksolid.v_mileage_daily_cagg AS
SELECT
    imei,
    date_trunc('day', gps_time, 'UTC')      AS day,
    count(*)                                AS fixes,
    count(*) FILTER (WHERE speed_kmh > 0)   AS moving_fixes,
    max(speed_kmh)                          AS max_speed_kmh,
    avg(speed_kmh)                          AS avg_speed_kmh,
    min(mileage_km)                         AS min_mileage_km,
    max(mileage_km)                         AS max_mileage_km,
    min(gps_time)                           AS first_fix,
    max(gps_time)                           AS last_fix
FROM tracksolid.position_history
GROUP BY imei, date_trunc('day', gps_time, 'UTC')
WITH NO DATA;

CREATE UNIQUE INDEX v_mileage_daily_cagg_key ON tracksolid.v_mileage_daily_cagg (imei, day);
