-- migrate: requires-extension postgis
-- 0002 · PostGIS: points for the map tables and the geofence table.
-- Points are generated from lat/lng so writers never have to build geometry themselves.
-- The hypertables keep plain lat/lng (track queries build points on the fly), which also lets
-- the TimescaleDB smoke test run on a server without PostGIS.

CREATE EXTENSION IF NOT EXISTS postgis;

ALTER TABLE tracksolid.live_positions
    ADD COLUMN geom geometry(Point, 4326)
    GENERATED ALWAYS AS (ST_SetSRID(ST_MakePoint(lng, lat), 4326)) STORED;
CREATE INDEX live_positions_geom_idx ON tracksolid.live_positions USING gist (geom);

ALTER TABLE tracksolid.parking_events
    ADD COLUMN geom geometry(Point, 4326)
    GENERATED ALWAYS AS (CASE WHEN lat IS NOT NULL AND lng IS NOT NULL
                              THEN ST_SetSRID(ST_MakePoint(lng, lat), 4326) END) STORED;
CREATE INDEX parking_events_geom_idx ON tracksolid.parking_events USING gist (geom);

ALTER TABLE tracksolid.alarms
    ADD COLUMN geom geometry(Point, 4326)
    GENERATED ALWAYS AS (CASE WHEN lat IS NOT NULL AND lng IS NOT NULL
                              THEN ST_SetSRID(ST_MakePoint(lng, lat), 4326) END) STORED;

CREATE TABLE tracksolid.geofences (
    geofence_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                text NOT NULL UNIQUE,
    kind                text NOT NULL DEFAULT 'zone',   -- depot | city | customer | zone
    city                text,
    geom                geometry(MultiPolygon, 4326) NOT NULL,
    source_id           text,                           -- Tracksolid fence id, when synced
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX geofences_geom_idx ON tracksolid.geofences USING gist (geom);
