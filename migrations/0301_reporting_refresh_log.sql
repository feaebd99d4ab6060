-- 0301 · reporting.refresh_log: one row per refresh of a reporting materialized view.
-- Written by dashboard_api's background refresher (FIX-D02, source = 'dashboard_api') and by
-- anyone refreshing by hand. The refresher reads it to refresh `reporting.v_trips` once per
-- interval across all workers / replicas (besides advisory lock 920145).

CREATE TABLE IF NOT EXISTS reporting.refresh_log (
    refresh_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    object_name  text NOT NULL,                 -- e.g. reporting.v_trips
    source       text NOT NULL,                 -- dashboard_api | manual | ...
    instance     text,                          -- host:pid:app-id of the refreshing process
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    duration_ms  integer,
    ok           boolean NOT NULL,
    row_count    bigint,                        -- rows in the view after the refresh
    error        text
);
CREATE INDEX IF NOT EXISTS refresh_log_object_time_idx
    ON reporting.refresh_log (object_name, finished_at DESC);

COMMENT ON TABLE reporting.refresh_log IS
    'One row per materialized-view refresh (FIX-D02); read by the dashboard_api refresher.';
