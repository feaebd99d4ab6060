-- 0307 · /health/ingest (issue #18) reports the latest failure of every feed, however old.
-- Failures are rare, so a partial index finds a feed's latest one in one probe instead of
-- walking past every successful row of that feed.
CREATE INDEX IF NOT EXISTS ingestion_log_failures_idx
    ON tracksolid.ingestion_log (source, method, logged_at DESC) WHERE NOT ok;
