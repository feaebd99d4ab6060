-- migrate: requires-no-extension timescaledb
-- 0003 (plain PostgreSQL variant) · without TimescaleDB the time-series tables stay ordinary
-- tables; BRIN indexes keep time-range scans cheap on append-mostly data.

CREATE INDEX position_history_time_brin ON tracksolid.position_history USING brin (gps_time);
CREATE INDEX heartbeats_time_brin ON tracksolid.heartbeats USING brin (gate_time);
CREATE INDEX fuel_readings_time_brin ON tracksolid.fuel_readings USING brin (reading_time);
CREATE INDEX temperature_readings_time_brin ON tracksolid.temperature_readings USING brin (reading_time);
