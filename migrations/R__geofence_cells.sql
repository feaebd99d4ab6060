-- migrate: requires-extension postgis
-- The grid index of the fences (0602_geofence_cells.sql): cell size and key, the build of one
-- fence's cells, and the trigger that keeps them with the fence. Re-applied when changed;
-- the last statement builds the cells of every fence that has none (the fences that existed
-- before 0602). A change of the cell scheme (size, key, level rule) must also rebuild every
-- fence's cells: add `TRUNCATE tracksolid.geofence_cells;` before that statement.

-- Level k has cells of 0.001 * 4^k degrees (level 0: ~110 m at the equator; level 8: ~65°).
CREATE OR REPLACE FUNCTION tracksolid.geofence_cell_size(lvl integer) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 0.001 * power(4, lvl)::double precision $$;

-- One integer per cell: row (latitude) and column (longitude) from the south-west corner of
-- the world; at most 180,000 rows x 360,000 columns, so row * 1,000,000 + column is unique.
CREATE OR REPLACE FUNCTION tracksolid.geofence_cell_key(
    lat double precision, lng double precision, lvl integer
) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT floor((lat + 90) / tracksolid.geofence_cell_size(lvl))::bigint * 1000000
         + floor((lng + 180) / tracksolid.geofence_cell_size(lvl))::bigint
$$;

-- The cells of one fence at the finest level where its bounding box spans at most 4,096 cells
-- (a 7 km customer site: level 0; a city zone: level 1-2; a country: level 3-4). Each cell's
-- box is widened by a millionth of the cell so that a point the key puts in the cell lies in
-- its box whatever the rounding; `inside` when the fence covers the whole widened box, else
-- `part` = the fence clipped to it (polygons only: a cell that only touches the fence's edge
-- keeps that edge as a sliver of the widened box).
CREATE OR REPLACE FUNCTION tracksolid.build_geofence_cells(fid bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    g   geometry;
    lvl integer := 0;
    s   double precision;
    e   double precision;
    x0  bigint; x1 bigint; y0 bigint; y1 bigint;
    n   integer;
BEGIN
    DELETE FROM tracksolid.geofence_cells WHERE geofence_id = fid;
    SELECT geom INTO g FROM tracksolid.geofences WHERE geofence_id = fid;
    IF g IS NULL OR ST_IsEmpty(g) THEN
        RETURN 0;
    END IF;
    LOOP
        s := tracksolid.geofence_cell_size(lvl);
        x0 := floor((ST_XMin(g) + 180) / s); x1 := floor((ST_XMax(g) + 180) / s);
        y0 := floor((ST_YMin(g) + 90) / s);  y1 := floor((ST_YMax(g) + 90) / s);
        EXIT WHEN (x1 - x0 + 1) * (y1 - y0 + 1) <= 4096 OR lvl >= 8;
        lvl := lvl + 1;
    END LOOP;
    e := s * 1e-6;
    INSERT INTO tracksolid.geofence_cells (geofence_id, level, cell, inside, part)
    SELECT fid, lvl, y * 1000000 + x, c.inside,
           CASE WHEN NOT c.inside THEN ST_CollectionExtract(ST_Intersection(g, c.box), 3) END
    FROM (
        SELECT x, y, b.box, ST_Covers(g, b.box) AS inside
        FROM (
            SELECT x, y, ST_MakeEnvelope(x * s - 180 - e, y * s - 90 - e,
                                         (x + 1) * s - 180 + e, (y + 1) * s - 90 + e, 4326) AS box
            FROM generate_series(x0, x1) AS x, generate_series(y0, y1) AS y
        ) b
        WHERE ST_Intersects(g, b.box)
    ) c;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION tracksolid.geofence_cells_sync() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tracksolid.build_geofence_cells(NEW.geofence_id);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS geofence_cells_sync ON tracksolid.geofences;
CREATE TRIGGER geofence_cells_sync
    AFTER INSERT OR UPDATE OF geom ON tracksolid.geofences
    FOR EACH ROW EXECUTE FUNCTION tracksolid.geofence_cells_sync();

SELECT tracksolid.build_geofence_cells(f.geofence_id)
FROM tracksolid.geofences f
WHERE NOT EXISTS (SELECT 1 FROM tracksolid.geofence_cells c WHERE c.geofence_id = f.geofence_id);
