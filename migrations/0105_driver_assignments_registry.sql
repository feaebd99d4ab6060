-- 0105 · Driver assignment history and the registry life cycle (issue #15).
--
-- driver_assignments: who drove which vehicle when. One row per period [valid_from, valid_to);
-- valid_to NULL = the current driver. Periods of one vehicle never overlap (exclusion
-- constraint, btree_gist for the text equality). Kept by a trigger on devices (so the device
-- sync, the registry import and any other writer keep it) plus the import's explicit
-- `assigned_from` (ingest/writers.py `record_driver_changes`): a new driver closes the open
-- period and opens one; an unchanged driver changes nothing. Trips, stops and alarms are
-- attributed to the driver whose period contains their time (reporting.v_trips from 0303, the
-- tracksolid.fn_* driver functions in R__analytics_views.sql).
--
-- Seed: every device with a driver today gets one open period from -infinity — its current
-- driver is the only one known, so every stored trip keeps the driver it shows today (the same
-- answer as before this migration, including history adopted or backfilled later). A later
-- change starts at the time the sync / import sees it, or at the CSV's `assigned_from`.
--
-- Registry life cycle: a device is never deleted; it is deactivated (is_active = false,
-- deactivated_at, deactivation_reason 'registry' | 'not_listed') by the registry CSV's `active`
-- column or when no account has listed it for REGISTRY_DEACTIVATE_AFTER_DAYS days
-- (api_listed_at: the last device sync whose list contained it).

CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE tracksolid.driver_assignments (
    assignment_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    imei            text NOT NULL REFERENCES tracksolid.devices (imei) ON DELETE CASCADE,
    driver_name     text NOT NULL CHECK (btrim(driver_name) <> ''),
    driver_phone    text,
    valid_from      timestamptz NOT NULL,
    valid_to        timestamptz,             -- NULL: the current driver
    source          text NOT NULL,           -- seed | api | csv
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT driver_assignments_period_check CHECK (valid_to IS NULL OR valid_to > valid_from),
    CONSTRAINT driver_assignments_no_overlap EXCLUDE USING gist (
        imei WITH =, tstzrange(valid_from, valid_to, '[)') WITH &&)
);
-- "the period of this vehicle that contains t": imei = ? AND valid_from <= t, newest first.
CREATE INDEX driver_assignments_imei_from_idx
    ON tracksolid.driver_assignments (imei, valid_from DESC);
CREATE UNIQUE INDEX driver_assignments_one_current_idx
    ON tracksolid.driver_assignments (imei) WHERE valid_to IS NULL;
CREATE INDEX driver_assignments_lower_driver_idx
    ON tracksolid.driver_assignments (lower(driver_name));

COMMENT ON TABLE tracksolid.driver_assignments IS
    'Who drove which vehicle when: [valid_from, valid_to), valid_to NULL = current; no overlap '
    'per vehicle. Kept by device sync and the registry import (docs/ingestion.md).';

INSERT INTO tracksolid.driver_assignments (imei, driver_name, driver_phone, valid_from, source)
SELECT d.imei, btrim(d.driver_name), nullif(btrim(d.driver_phone), ''), '-infinity', 'seed'
FROM tracksolid.devices d
WHERE nullif(btrim(d.driver_name), '') IS NOT NULL;

-- Every writer of devices.driver_name keeps the history (the device sync, the registry import,
-- push auto-registration, legacy adoption, an operator's UPDATE): a new driver closes the
-- vehicle's latest period and opens one at `tracksolid.assigned_at` (a transaction-local
-- setting the worker sets to its clock; else now()), never before the latest period's start;
-- the first driver of a vehicle without history gets a period from -infinity. An unchanged
-- driver (case and spaces ignored) changes nothing but a new phone number. A NULL / empty
-- driver never closes a period (the API's nulls never erase the registry). The registry
-- import then applies an explicit `assigned_from` (ingest/writers.py record_driver_changes).
CREATE FUNCTION tracksolid.devices_record_driver() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_name   text := nullif(btrim(NEW.driver_name), '');
    v_phone  text := nullif(btrim(NEW.driver_phone), '');
    v_at     timestamptz := coalesce(
                 nullif(current_setting('tracksolid.assigned_at', true), '')::timestamptz, now());
    v_source text := coalesce(nullif(current_setting('tracksolid.assignment_source', true), ''),
                              'sql');
    cur      tracksolid.driver_assignments%ROWTYPE;
BEGIN
    IF v_name IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT * INTO cur FROM tracksolid.driver_assignments a
    WHERE a.imei = NEW.imei ORDER BY a.valid_from DESC LIMIT 1;
    IF NOT FOUND THEN
        INSERT INTO tracksolid.driver_assignments
            (imei, driver_name, driver_phone, valid_from, source)
        VALUES (NEW.imei, v_name, v_phone, '-infinity', v_source);
    ELSIF lower(cur.driver_name) = lower(v_name) THEN
        UPDATE tracksolid.driver_assignments
        SET driver_phone = coalesce(v_phone, driver_phone), valid_to = NULL
        WHERE assignment_id = cur.assignment_id
          AND (valid_to IS NOT NULL OR driver_phone IS DISTINCT FROM coalesce(v_phone, driver_phone));
    ELSE
        v_at := greatest(v_at, cur.valid_from + interval '1 second');
        UPDATE tracksolid.driver_assignments SET valid_to = v_at
        WHERE assignment_id = cur.assignment_id AND (valid_to IS NULL OR valid_to > v_at);
        INSERT INTO tracksolid.driver_assignments
            (imei, driver_name, driver_phone, valid_from, source)
        VALUES (NEW.imei, v_name, v_phone, v_at, v_source);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER devices_record_driver_insert
    AFTER INSERT ON tracksolid.devices
    FOR EACH ROW WHEN (NEW.driver_name IS NOT NULL)
    EXECUTE FUNCTION tracksolid.devices_record_driver();
CREATE TRIGGER devices_record_driver_update
    AFTER UPDATE OF driver_name, driver_phone ON tracksolid.devices
    FOR EACH ROW WHEN (NEW.driver_name IS DISTINCT FROM OLD.driver_name
                       OR NEW.driver_phone IS DISTINCT FROM OLD.driver_phone)
    EXECUTE FUNCTION tracksolid.devices_record_driver();

ALTER TABLE tracksolid.devices
    ADD COLUMN api_listed_at timestamptz,
    ADD COLUMN deactivated_at timestamptz,
    ADD COLUMN deactivation_reason text;

-- Every device the API synced so far was listed by its account at that time.
UPDATE tracksolid.devices SET api_listed_at = api_synced_at WHERE api_synced_at IS NOT NULL;

COMMENT ON COLUMN tracksolid.devices.api_listed_at IS
    'Last device sync in which an account''s jimi.user.device.list contained this IMEI.';
COMMENT ON COLUMN tracksolid.devices.deactivation_reason IS
    'Why is_active is false: registry (the CSV said active=no) | not_listed (no account listed '
    'it for REGISTRY_DEACTIVATE_AFTER_DAYS days; listed again = active again).';

CREATE INDEX devices_expiration_idx ON tracksolid.devices (expiration) WHERE is_active;
