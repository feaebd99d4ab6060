-- migrate: requires-extension postgis
-- 0603 · Visits of a deleted fence go with it by trigger instead of a foreign key (issue #16,
-- the from-scratch events target): the key's check locked the fence's row once per inserted
-- visit (43,615 row locks on 500 fences in bench/bench_geofences.py, 0.6 s of a 5 s budget).
-- The geofence_events pass (the only writer of visits) instead takes that lock once per fence
-- at its start (`FOR KEY SHARE`, geofences/events.py), so a DELETE of a fence waits for a
-- running pass and then removes every visit the pass wrote, exactly as the cascade did.
ALTER TABLE tracksolid.geofence_events DROP CONSTRAINT IF EXISTS geofence_events_geofence_id_fkey;

CREATE OR REPLACE FUNCTION tracksolid.geofence_events_cascade() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM tracksolid.geofence_events e USING gone g WHERE e.geofence_id = g.geofence_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER geofence_events_cascade
    AFTER DELETE ON tracksolid.geofences
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION tracksolid.geofence_events_cascade();

-- Visits of fences deleted while the key was gone cannot exist (it is dropped above, in the
-- same transaction), but a restore of a partial dump could bring some: never keep orphans.
DELETE FROM tracksolid.geofence_events e
WHERE NOT EXISTS (SELECT 1 FROM tracksolid.geofences g WHERE g.geofence_id = e.geofence_id);
