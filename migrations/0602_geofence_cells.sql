-- migrate: requires-extension postgis
-- 0602 · A grid index of each fence (issue #16, the from-scratch events target): the cells of a
-- regular lat/lng grid that the fence touches, each marked `inside` (the whole cell is in the
-- fence) or carrying `part`, the fence clipped to the cell. The geofence_events pass joins
-- the fixes to these cells by an integer key (a hash join, no spatial index on the fixes) and
-- tests a point exactly only against the small `part` of a boundary cell
-- (geofences/events.py; docs/geofences.md "How membership is computed").
-- Kept by the trigger in R__geofence_cells.sql on every insert or reshape of a fence; a
-- deleted fence takes its cells along. Same text on TimescaleDB and plain PostgreSQL.

CREATE TABLE tracksolid.geofence_cells (
    geofence_id bigint   NOT NULL REFERENCES tracksolid.geofences (geofence_id) ON DELETE CASCADE,
    level       smallint NOT NULL,   -- cell size tracksolid.geofence_cell_size(level) degrees
    cell        bigint   NOT NULL,   -- tracksolid.geofence_cell_key(lat, lng, level)
    inside      boolean  NOT NULL,   -- the whole cell lies in the fence
    part        geometry,            -- else: the fence within the cell (a little beyond its edges)
    PRIMARY KEY (geofence_id, level, cell),
    CHECK (inside OR part IS NOT NULL)
);
-- No index on (level, cell): the pass hashes the cells (a few hundred thousand rows at most)
-- and probes with every fix; an index would tempt the planner into one probe per fix.
