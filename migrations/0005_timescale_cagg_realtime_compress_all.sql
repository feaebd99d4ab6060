-- migrate: requires-extension timescaledb
-- 0005 · TimescaleDB as production runs it (issue #11):
-- 1. The daily roll-up answers with real-time aggregation: buckets past the last refresh are
--    computed from position_history at query time, so today's mileage is current on both
--    engines (the plain variant is refreshed by the worker's `mileage_rollup` job).
-- 2. Every hypertable is compressible (fuel and temperature readings were not); the policy
--    in R__timescale_policies.sql compresses all four after TIMESCALE_COMPRESS_AFTER.

ALTER MATERIALIZED VIEW tracksolid.v_mileage_daily_cagg SET (timescaledb.materialized_only = false);

ALTER TABLE tracksolid.fuel_readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'imei',
    timescaledb.compress_orderby = 'reading_time DESC'
);
ALTER TABLE tracksolid.temperature_readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'imei, sensor',
    timescaledb.compress_orderby = 'reading_time DESC'
);
