-- migrate: requires-extension timescaledb
-- 0003 · TimescaleDB hypertables (only where the extension is available; see 0003_plain_*).
-- Chunk interval comes from the setting TIMESCALE_CHUNK_INTERVAL (runner sets app.ts_chunk).

CREATE EXTENSION IF NOT EXISTS timescaledb;

DO $$
DECLARE
    chunk interval := coalesce(nullif(current_setting('app.ts_chunk', true), ''), '1 day')::interval;
BEGIN
    PERFORM create_hypertable('tracksolid.position_history', 'gps_time',
                              chunk_time_interval => chunk, if_not_exists => true, migrate_data => true);
    PERFORM create_hypertable('tracksolid.heartbeats', 'gate_time',
                              chunk_time_interval => chunk * 7, if_not_exists => true, migrate_data => true);
    PERFORM create_hypertable('tracksolid.fuel_readings', 'reading_time',
                              chunk_time_interval => chunk * 7, if_not_exists => true, migrate_data => true);
    PERFORM create_hypertable('tracksolid.temperature_readings', 'reading_time',
                              chunk_time_interval => chunk * 7, if_not_exists => true, migrate_data => true);
END $$;

-- Compression settings (the policy that uses them is in R__timescale_policies.sql).
ALTER TABLE tracksolid.position_history SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'imei',
    timescaledb.compress_orderby = 'gps_time DESC'
);
ALTER TABLE tracksolid.heartbeats SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'imei',
    timescaledb.compress_orderby = 'gate_time DESC'
);
