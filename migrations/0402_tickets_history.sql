-- migrate: requires-extension postgis
-- 0402 · Ticket history: `tickets.inc` is current state (upsert), so closures and the open
-- backlog over time are captured forward by `tickets.capture_history()` (R__tickets_reporting)
-- after every `import_tickets.py --apply` run (seed 003, migration 10_inc_history_capture).

-- Append-only: one row per observed closure (a reopened and re-closed ticket gets a second
-- row with its new closed_at). closed_at is NULL when the feed had none; observed_at is when
-- the importer first saw the ticket closed.
CREATE TABLE tickets.closure_events (
    event_id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ticket_id           text NOT NULL,
    closed_at           timestamptz,
    observed_at         timestamptz NOT NULL,
    normalized_status   text,
    cluster             text,
    region              text,
    assigned_team       text,
    created_at_service  timestamptz,
    mttr                integer                    -- minutes, as the feed reported it
);
CREATE UNIQUE INDEX closure_events_ticket_closed_uq
    ON tickets.closure_events (ticket_id, coalesce(closed_at, '-infinity'::timestamptz));
CREATE INDEX closure_events_closed_idx ON tickets.closure_events (closed_at DESC);

CREATE FUNCTION tickets.closure_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'tickets.closure_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER closure_events_append_only
    BEFORE UPDATE OR DELETE ON tickets.closure_events
    FOR EACH ROW EXECUTE FUNCTION tickets.closure_events_append_only();

-- One row per EAT day and cluster ('(none)' for tickets without one): the open backlog at the
-- last capture of that day, and the day's flow (created / closed on that EAT day).
CREATE TABLE tickets.inc_daily_snapshot (
    snapshot_date       date NOT NULL,             -- EAT calendar day
    cluster             text NOT NULL,
    open_count          integer NOT NULL,
    actionable_count    integer NOT NULL,
    pending_count       integer NOT NULL,
    breached_count      integer NOT NULL,          -- open longer than the SLA target (48 h)
    no_start_count      integer NOT NULL,          -- open without created_at_service/first_seen_at
    avg_open_hours      numeric(10,1),
    max_open_hours      numeric(10,1),
    created_count       integer NOT NULL,          -- created_at_service on this EAT day
    closed_count        integer NOT NULL,          -- closed_at on this EAT day
    captured_at         timestamptz NOT NULL,
    PRIMARY KEY (snapshot_date, cluster)
);
