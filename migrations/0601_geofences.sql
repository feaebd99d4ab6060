-- migrate: requires-extension postgis
-- 0601 · Geofences (issue #16): kinds, cost centre, circles, and the enter/exit events the
-- worker's `geofence_events` job computes from position_history (geofences/events.py;
-- docs/geofences.md). Same text on TimescaleDB and plain PostgreSQL.

-- ── The fences ──────────────────────────────────────────────────────────────────────────
-- 0002 created the table with free-text kinds (depot | city | customer | zone) and nothing
-- wrote it; map those spellings onto the five kinds before the check.
UPDATE tracksolid.geofences SET kind = CASE kind
    WHEN 'city' THEN 'city_zone' WHEN 'zone' THEN 'city_zone'
    WHEN 'customer' THEN 'customer_site' ELSE kind END;

ALTER TABLE tracksolid.geofences
    ALTER COLUMN kind DROP DEFAULT,
    ADD COLUMN cost_centre        text,
    ADD COLUMN radius_m           double precision,      -- circles: the radius they were drawn with
    ADD COLUMN center             geometry(Point, 4326), -- circles: the centre point
    ADD COLUMN properties         jsonb NOT NULL DEFAULT '{}'::jsonb,  -- the rest of the Feature's properties
    ADD COLUMN events_computed_at timestamptz,           -- NULL: new or reshaped, events to (re)compute
    ADD CONSTRAINT geofences_kind_check
        CHECK (kind IN ('depot', 'customer_site', 'city_zone', 'region', 'no_go')),
    ADD CONSTRAINT geofences_radius_check
        CHECK (radius_m IS NULL OR (radius_m > 0 AND radius_m <= 100000 AND center IS NOT NULL)),
    ADD CONSTRAINT geofences_geom_valid CHECK (ST_IsValid(geom) AND NOT ST_IsEmpty(geom)),
    ADD CONSTRAINT geofences_name_check CHECK (length(btrim(name)) BETWEEN 1 AND 200);

CREATE INDEX geofences_kind_idx ON tracksolid.geofences (kind);
CREATE INDEX geofences_cost_centre_idx ON tracksolid.geofences (lower(cost_centre));
CREATE INDEX geofences_city_idx ON tracksolid.geofences (lower(city));

COMMENT ON TABLE tracksolid.geofences IS
    'Zones loaded from GeoJSON (python -m geofences load, POST /geofences). A circle is stored as its polygon buffered on the geography, with radius_m and center kept. docs/geofences.md.';
COMMENT ON COLUMN tracksolid.geofences.events_computed_at IS
    'When the geofence_events job last computed this fence over the whole horizon; NULL makes the next run do it (new or reshaped fence).';

-- ── Enter/exit events (one row per visit of a vehicle to a fence) ───────────────────────
CREATE TABLE tracksolid.geofence_events (
    imei            text NOT NULL,
    geofence_id     bigint NOT NULL REFERENCES tracksolid.geofences ON DELETE CASCADE,
    entered_at      timestamptz NOT NULL,   -- first fix of the run of fixes that confirmed the entry
    exited_at       timestamptz,            -- first fix of the run that confirmed the exit; NULL while inside
    last_inside_at  timestamptz NOT NULL,   -- last fix inside during this visit
    dwell_s         integer NOT NULL,       -- exited_at (or last_inside_at while inside) - entered_at
    fixes           integer NOT NULL,       -- plausible fixes inside during the visit
    computed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (imei, geofence_id, entered_at),
    CHECK (exited_at IS NULL OR exited_at >= entered_at)
);
CREATE INDEX geofence_events_fence_idx ON tracksolid.geofence_events (geofence_id, entered_at);
CREATE INDEX geofence_events_time_idx ON tracksolid.geofence_events (entered_at);
CREATE INDEX geofence_events_open_idx ON tracksolid.geofence_events (imei)
    WHERE exited_at IS NULL;

COMMENT ON TABLE tracksolid.geofence_events IS
    'Visits of vehicles to geofences, with hysteresis (GEOFENCE_MIN_FIXES / GEOFENCE_MIN_SECONDS), from plausible fixes only; written by the geofence_events job. docs/geofences.md.';

-- ── Out-of-region episodes: a vehicle outside every region/city_zone fence of its home ──
-- Home = fences of kind region or city_zone whose city or cost_centre matches the vehicle's
-- (tracksolid.devices.city / cost_centre); vehicles with no home fence are never listed.
CREATE TABLE tracksolid.out_of_region_events (
    imei            text NOT NULL,
    left_at         timestamptz NOT NULL,   -- first fix of the run that confirmed it left home
    returned_at     timestamptz,            -- first fix back home that confirmed it; NULL while away
    last_seen_at    timestamptz NOT NULL,   -- last fix away during the episode
    away_s          integer NOT NULL,
    fixes           integer NOT NULL,       -- plausible fixes away from home during the episode
    computed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (imei, left_at)
);
CREATE INDEX out_of_region_events_time_idx ON tracksolid.out_of_region_events (left_at);

COMMENT ON TABLE tracksolid.out_of_region_events IS
    'Episodes of a vehicle seen outside every region/city_zone geofence matching its city or cost centre (geofence_events job). docs/geofences.md.';

-- ── The job's watermark (received_at, database time), like trip_derive_state ───────────
CREATE TABLE tracksolid.geofence_event_state (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    received_until  timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE tracksolid.geofence_event_state IS
    'Watermark of the geofence_events job: positions received after it make their vehicle''s recent events be recomputed. Delete the row to recompute the whole horizon.';
