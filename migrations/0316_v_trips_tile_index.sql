-- 0316 · An n-D index on the trips' extent in space and time, for the trips vector tiles
-- (issue #19, reporting.tile_trip_lines in R__reporting_tiles.sql).
-- migrate: requires-extension postgis
--
-- A trips tile asks for the trips that START in the window [t0, t1) and whose start→end line
-- meets the tile. Without this index every tile reads the whole window's trips through
-- ix_v_trips_start and tests each against the tile (49,000 trips for a week of 1,000
-- vehicles, of which a z14 tile keeps ~12 %). Here each trip is one 3-D line from
-- (start_lng, start_lat, start epoch) to (end_lng, end_lat, start epoch): its n-D bounding
-- box is the trip's lat/lng box at its start time, so one GiST probe with the tile's box
-- × the window's epochs (`&&&`) finds exactly the candidates of both tests.
--
-- The epoch is taken of `start_time AT TIME ZONE 'UTC'` (a timestamp): extract() of a
-- timestamptz is STABLE and cannot be indexed, that of a timestamp is IMMUTABLE, and the
-- two give the same seconds.
--
-- A later migration that rebuilds reporting.v_trips (DROP + CREATE, as 0303 did) must create
-- this index again, like the others of 0302/0303.

CREATE OR REPLACE FUNCTION reporting.trip_extent_nd(
    start_lng float8, start_lat float8, end_lng float8, end_lat float8, start_time timestamptz)
RETURNS geometry
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ST_MakeLine(
    ST_MakePoint(start_lng, start_lat, extract(epoch FROM (start_time AT TIME ZONE 'UTC'))::float8),
    ST_MakePoint(coalesce(end_lng, start_lng), coalesce(end_lat, start_lat),
                 extract(epoch FROM (start_time AT TIME ZONE 'UTC'))::float8));

CREATE INDEX IF NOT EXISTS ix_v_trips_extent_nd ON reporting.v_trips USING gist (
    reporting.trip_extent_nd(start_lng, start_lat, end_lng, end_lat, start_time)
        gist_geometry_ops_nd)
WHERE start_lat IS NOT NULL AND start_lng IS NOT NULL;
