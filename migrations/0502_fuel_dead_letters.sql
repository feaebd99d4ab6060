-- Fuel importer: dead letters and quarantined files (docs/fuel.md "Dead letters and quarantine").
--
-- fuel.rejects becomes the feed's dead-letter table: besides the parsed reason it keeps the
-- record's original text (secret-looking values redacted, at most 64 KB) so that
-- `import_fuel.py --retry-rejects` can re-parse it with the current code, and when it was
-- last retried. `raw` (jsonb) holds the record cleaned to what PostgreSQL can store (NULL
-- when the record is too large or too deep).
-- fuel.quarantined_files lists the feed files that could not be read at all and were moved
-- to `quarantine/<key>` in their bucket.

ALTER TABLE fuel.rejects
    ADD COLUMN raw_text    text,
    ADD COLUMN retried_at  timestamptz,
    ADD COLUMN retries     integer NOT NULL DEFAULT 0;
COMMENT ON TABLE fuel.rejects IS 'Dead letters of the fuel feed: records that could not be stored (reason, redacted raw text); import_fuel.py --list-rejects / --retry-rejects.';
COMMENT ON COLUMN fuel.rejects.raw_text IS 'The record as read (JSON text, secret-looking values redacted, at most 64 KB; truncated ones end with a marker and cannot be retried).';

CREATE TABLE fuel.quarantined_files (
    object_key      text PRIMARY KEY,          -- where the file was in the feed
    bucket          text NOT NULL,
    quarantine_key  text NOT NULL,             -- quarantine/<object_key>
    reason          text NOT NULL,
    etag            text,
    size_bytes      bigint,
    quarantined_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE fuel.quarantined_files IS 'Fuel feed files that could not be read at all, moved to quarantine/<key> (reason object beside it); the row goes when a fixed file is imported.';
