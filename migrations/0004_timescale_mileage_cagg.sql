-- migrate: no-transaction
-- migrate: requires-extension timescaledb
-- 0004 · Daily per-vehicle roll-up of position_history as a continuous aggregate
-- (continuous aggregates cannot be created inside a transaction block).

CREATE MATERIALIZED VIEW IF NOT EXISTS tracksolid.v_mileage_daily_cagg
WITH (timescaledb.continuous) AS
SELECT
    imei,
    time_bucket(INTERVAL '1 day', gps_time) AS day,
    count(*)                                AS fixes,
    count(*) FILTER (WHERE speed_kmh > 0)   AS moving_fixes,
    max(speed_kmh)                          AS max_speed_kmh,
    avg(speed_kmh)                          AS avg_speed_kmh,
    min(mileage_km)                         AS min_mileage_km,
    max(mileage_km)                         AS max_mileage_km,
    min(gps_time)                           AS first_fix,
    max(gps_time)                           AS last_fix
FROM tracksolid.position_history
GROUP BY imei, time_bucket(INTERVAL '1 day', gps_time)
WITH NO DATA;

SELECT add_continuous_aggregate_policy('tracksolid.v_mileage_daily_cagg',
    start_offset => INTERVAL '7 days',
    end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '30 minutes',
    if_not_exists => true);
