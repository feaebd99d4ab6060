-- 0403 · Dead letters and quarantined files of the tickets feed: one bad value costs only
-- itself (architecture §4.12). A row the importer cannot store goes to `tickets.rejects`
-- (the rest of its file is imported); a file it cannot read at all is moved to
-- `quarantine/<key>` in its bucket and recorded in `tickets.quarantined_files` (the drain goes
-- on). `import_tickets.py --list-rejects / --retry-rejects / --retry-quarantine` use them.

CREATE TABLE tickets.rejects (
    reject_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    feed            text NOT NULL DEFAULT 'inc',
    source_key      text NOT NULL,                  -- change-file key (or local path)
    line            integer NOT NULL,               -- first physical line of the record (1-based)
    ticket_id       text,                           -- when one could be read
    reason          text NOT NULL,                  -- why it was rejected (updated by each retry)
    header          text[] NOT NULL,                -- the file's header: a row is re-parsed with it
    raw_row         bytea NOT NULL,                 -- the record's UTF-8 bytes, secrets redacted; what --retry-rejects re-parses
    raw_text        text NOT NULL,                  -- readable copy (NUL shown as U+2400), for people
    raw_truncated   boolean NOT NULL DEFAULT false, -- raw_row was cut at the storage bound (cannot be replayed)
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    seen_count      integer NOT NULL DEFAULT 1,
    retried_at      timestamptz,
    retry_count     integer NOT NULL DEFAULT 0,
    CONSTRAINT rejects_row_uq UNIQUE (feed, source_key, line)
);
CREATE INDEX rejects_first_seen_idx ON tickets.rejects (feed, first_seen_at);
COMMENT ON TABLE tickets.rejects IS
    'Dead letters of the tickets feed: rows that could not be stored; replay with import_tickets.py --retry-rejects.';

CREATE TABLE tickets.quarantined_files (
    feed            text NOT NULL DEFAULT 'inc',
    source_key      text NOT NULL,                  -- the original key (changes/...)
    bucket          text NOT NULL,
    quarantine_key  text NOT NULL,                  -- quarantine/<source_key>; reason object beside it
    reason          text NOT NULL,
    size_bytes      bigint,
    sha256          text,
    status          text NOT NULL DEFAULT 'quarantined'
                    CHECK (status IN ('quarantined', 'released')),
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    released_at     timestamptz,                    -- imported after a fix
    PRIMARY KEY (feed, source_key)
);
COMMENT ON TABLE tickets.quarantined_files IS
    'Change files that could not be read at all, moved to quarantine/ in their bucket; the drain went on past them.';
