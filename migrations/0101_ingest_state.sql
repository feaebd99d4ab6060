-- 0101 · Ingest worker state: per-job, per-device watermarks.
-- `covered_until` = the API has been read completely up to this time for (job, imei).
-- Written in the same transaction as the rows of that window, so a killed catch-up resumes
-- exactly where its last committed chunk ended.

CREATE TABLE tracksolid.ingest_watermarks (
    job             text NOT NULL,      -- track_list | trips | parking_off | parking_on | alarms
    imei            text NOT NULL,
    covered_until   timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job, imei)
);

COMMENT ON TABLE tracksolid.ingest_watermarks IS
    'Up to when each polling job has fetched each device (ingest_worker.py; docs/ingestion.md).';
