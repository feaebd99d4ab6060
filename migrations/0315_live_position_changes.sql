-- 0315 · reporting.live_position_changes: the change feed behind GET /webhook/live-positions/stream
-- (issue #19). Every statement that inserts, updates or deletes rows of tracksolid.live_positions
-- (the ingest worker's batch upsert, the webhook receiver's one-statement delivery, anything
-- else) appends one row per touched vehicle here and sends NOTIFY live_positions; each read-API
-- process has ONE connection listening on that channel and fans the rows out to its SSE clients.
--
-- Why a table and not only NOTIFY: a NOTIFY is lost while nobody listens (a read-API restart,
-- a network blip), and a reconnecting client must get exactly what changed since the last event
-- it saw (Last-Event-ID = a change_id). The table is the durable, ordered log; NOTIFY (empty
-- payload, one per transaction because PostgreSQL folds identical notifications) is the wake-up.
--
-- Write-path cost: statement-level triggers with transition tables, so a poll of 1,000 vehicles
-- costs one INSERT ... SELECT of 1,000 narrow rows and one NOTIFY, not 1,000 trigger calls
-- (bench/bench_sse.py measures it, docs/performance.md "Live stream (issue #19)").
-- Retention: rows older than 1 hour are deleted by the trigger itself, oldest first and at most
-- 5,000 per time, each time the change_id crosses a multiple of 1,000 (no separate job, works
-- on any engine). A client whose Last-Event-ID was pruned gets a full snapshot instead.
--
-- In `reporting` so the read-only role dashboard_ro can SELECT it like every reporting table;
-- LISTEN needs no privilege.

CREATE TABLE IF NOT EXISTS reporting.live_position_changes (
    change_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    imei       text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE reporting.live_position_changes IS
    'One row per vehicle touched by a write to tracksolid.live_positions (or to the device fields '
    'the live map shows); kept 1 hour. Feeds the SSE stream /webhook/live-positions/stream.';

-- SECURITY DEFINER: writers (tracksolid_owner, the migration role, tests) need no privilege on
-- the change table. One function for the three live_positions triggers: each names its
-- transition table `changed_rows`. Kept to one plpgsql call per statement (the wake-up and the
-- pruning are inline, not a nested function) because it runs in every writer's statement.
CREATE OR REPLACE FUNCTION tracksolid.note_live_position_changes()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_last bigint;
    v_n    bigint;
BEGIN
    WITH ins AS (
        INSERT INTO reporting.live_position_changes (imei)
        SELECT r.imei FROM changed_rows r
        RETURNING change_id
    )
    SELECT max(change_id), count(*) INTO v_last, v_n FROM ins;
    IF v_n = 0 THEN  -- e.g. the INSERT trigger of an upsert that only updated
        RETURN NULL;
    END IF;
    PERFORM pg_notify('live_positions', '');
    -- Once per 1,000 changes, and only when the oldest row has expired (one index probe):
    -- oldest first, bounded, never a long scan inside a writer's transaction.
    IF v_last / 1000 <> (v_last - v_n) / 1000
       AND (SELECT o.changed_at FROM reporting.live_position_changes o
            ORDER BY o.change_id LIMIT 1) < now() - interval '1 hour' THEN
        DELETE FROM reporting.live_position_changes c
        WHERE c.change_id IN (SELECT o.change_id FROM reporting.live_position_changes o
                              ORDER BY o.change_id LIMIT 5000)
          AND c.changed_at < now() - interval '1 hour';
    END IF;
    RETURN NULL;
END
$$;

-- Transition tables need one trigger per event (PostgreSQL refuses REFERENCING with
-- INSERT OR UPDATE). INSERT ... ON CONFLICT DO UPDATE fires both, each with its own rows.
DROP TRIGGER IF EXISTS live_positions_changes_ins ON tracksolid.live_positions;
CREATE TRIGGER live_positions_changes_ins
    AFTER INSERT ON tracksolid.live_positions
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tracksolid.note_live_position_changes();
DROP TRIGGER IF EXISTS live_positions_changes_upd ON tracksolid.live_positions;
CREATE TRIGGER live_positions_changes_upd
    AFTER UPDATE ON tracksolid.live_positions
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tracksolid.note_live_position_changes();
DROP TRIGGER IF EXISTS live_positions_changes_del ON tracksolid.live_positions;
CREATE TRIGGER live_positions_changes_del
    AFTER DELETE ON tracksolid.live_positions
    REFERENCING OLD TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tracksolid.note_live_position_changes();

-- A device whose label, driver, cost centre, city, type or activity changes moves on (or off)
-- the filtered live maps: note it when it has a live position. The registry sync rewrites
-- devices every few hours; unchanged rows cost a comparison, not a change row.
CREATE OR REPLACE FUNCTION tracksolid.note_device_live_changes()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_n bigint;
BEGIN
    WITH ins AS (
        INSERT INTO reporting.live_position_changes (imei)
        SELECT n.imei
        FROM new_devices n
        JOIN old_devices o ON o.imei = n.imei
        WHERE (n.vehicle_number, n.vehicle_name, n.driver_name, n.driver_phone, n.cost_centre,
               n.city, n.vehicle_type, n.is_active)
              IS DISTINCT FROM
              (o.vehicle_number, o.vehicle_name, o.driver_name, o.driver_phone, o.cost_centre,
               o.city, o.vehicle_type, o.is_active)
          AND EXISTS (SELECT 1 FROM tracksolid.live_positions lp WHERE lp.imei = n.imei)
        RETURNING change_id
    )
    SELECT count(*) INTO v_n FROM ins;
    IF v_n > 0 THEN
        PERFORM pg_notify('live_positions', '');
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS devices_live_changes_upd ON tracksolid.devices;
CREATE TRIGGER devices_live_changes_upd
    AFTER UPDATE ON tracksolid.devices
    REFERENCING OLD TABLE AS old_devices NEW TABLE AS new_devices
    FOR EACH STATEMENT EXECUTE FUNCTION tracksolid.note_device_live_changes();
