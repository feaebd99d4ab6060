-- migrate: requires-extension timescaledb
-- Repeatable · compression and retention policies from the settings
-- TIMESCALE_COMPRESS_AFTER (default 7 days) and TIMESCALE_RETENTION (default off).
-- The runner passes them as app.ts_compress_after / app.ts_retention and re-applies this file
-- whenever its content or those values change (they are part of its checksum).
-- Every hypertable is compressed (0005 made fuel and temperature readings compressible too).

DO $$
DECLARE
    compress_after text := coalesce(nullif(current_setting('app.ts_compress_after', true), ''), '7 days');
    retention      text := coalesce(nullif(current_setting('app.ts_retention', true), ''), 'off');
    tbl            text;
BEGIN
    -- The daily roll-up's refresh policy recomputes the last 7 days: with raw chunks dropped
    -- inside that window it would empty days it is meant to keep (issue #11).
    IF retention <> 'off' AND retention::interval < interval '8 days' THEN
        RAISE EXCEPTION 'TIMESCALE_RETENTION=% is too short: keep at least 8 days of raw data'
            ' (the daily roll-up refreshes the last 7 days); use "off" to keep everything',
            retention;
    END IF;
    FOREACH tbl IN ARRAY ARRAY['tracksolid.position_history', 'tracksolid.heartbeats',
                               'tracksolid.fuel_readings', 'tracksolid.temperature_readings'] LOOP
        PERFORM remove_compression_policy(tbl::regclass, if_exists => true);
        IF compress_after <> 'off' THEN
            PERFORM add_compression_policy(tbl::regclass, compress_after::interval);
        END IF;
    END LOOP;
    FOREACH tbl IN ARRAY ARRAY['tracksolid.position_history', 'tracksolid.heartbeats',
                               'tracksolid.fuel_readings', 'tracksolid.temperature_readings'] LOOP
        PERFORM remove_retention_policy(tbl::regclass, if_exists => true);
        IF retention <> 'off' THEN
            PERFORM add_retention_policy(tbl::regclass, retention::interval);
        END IF;
    END LOOP;
END $$;
