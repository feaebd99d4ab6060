-- migrate: requires-extension postgis
-- Repeatable · vector tiles of the read-API (issue #19): GET /tiles/{layer}/{z}/{x}/{y}.mvt
-- (dashboard/tiles.py). Each function returns one Mapbox Vector Tile (ST_AsMVT) of one layer,
-- named like the layer, in Web Mercator (XYZ scheme, extent 4096, buffer 256); an empty
-- bytea when no feature falls in the tile.
--
-- Conventions (as R__reporting_geojson.sql): SECURITY DEFINER with a fixed search_path, UTC
-- clock, the same filters and the same refusals (SQLSTATE 22023, reporting.check_filters) as
-- the JSON endpoint of the layer, so a tile shows exactly the features of the JSON answer
-- that lie in it. Times are properties in the JSON answers' text (to_json: ISO-8601 with
-- +00:00); numbers are float8 / integers (ST_AsMVT would write a numeric as a string).
--
-- Index-friendly tile filter: the tile's envelope, widened by the buffer (1/16 of a tile:
-- ST_AsMVTGeom's 256 of 4096; 128 for the live layer's points), is transformed ONCE to WGS 84 (reporting.tile_bbox) and the
-- rows are compared in their own coordinates (the GiST index of live_positions.geom, plain
-- lat/lng comparisons after the time index for trips and fixes) — never one ST_Transform per
-- row before the filter. A Web Mercator rectangle is a lat/lng rectangle, so the test is exact.
-- Trips and live positions are placed in tile units by arithmetic (reporting.tile_px /
-- tile_py: the Web Mercator formula, rounded like ST_AsMVTGeom), not by ST_Transform +
-- ST_AsMVTGeom per row; ST_AsMVT takes geometries already in tile space.
-- `SET jit = off`: PostGIS gives ST_AsMVTGeom a high cost, so a tile of a week of trips looked
-- expensive enough for JIT, whose compilation took ~2 s of a 2.3 s tile (measured at 1,000
-- vehicles) for a query that runs in ~100 ms without it.

-- z / x / y of the XYZ scheme: z 0..22, x and y 0..2^z-1 (22023 otherwise).
CREATE OR REPLACE FUNCTION reporting.check_tile(p_z integer, p_x integer, p_y integer)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF p_z IS NULL OR p_z < 0 OR p_z > 22 THEN
        RAISE EXCEPTION 'z must be between 0 and 22 (got %)', coalesce(p_z::text, 'null')
            USING ERRCODE = '22023';
    END IF;
    IF p_x IS NULL OR p_y IS NULL OR p_x < 0 OR p_y < 0 OR p_x >= (1 << p_z) OR p_y >= (1 << p_z)
    THEN
        RAISE EXCEPTION 'x and y must be between 0 and % at zoom % (got %/%)', (1 << p_z) - 1,
            p_z, coalesce(p_x::text, 'null'), coalesce(p_y::text, 'null')
            USING ERRCODE = '22023';
    END IF;
    RETURN true;
END
$$;

-- The tile's envelope with the MVT buffer, in WGS 84 (a box2d: lng/lat bounds).
CREATE OR REPLACE FUNCTION reporting.tile_bbox(p_z integer, p_x integer, p_y integer)
RETURNS box2d
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, public
RETURN box2d(ST_Transform(ST_TileEnvelope(p_z, p_x, p_y, margin => 256.0 / 4096), 4326));

-- ── Live positions ─────────────────────────────────────────────────────────────────────────
-- The vehicles of GET /webhook/live-positions (same cost_centre / acc_status filters, same
-- status words) as Points. Properties: imei, name (the label the map shows = the JSON's
-- vehicle_number), vehicle_number, vehicle_name, driver_name, cost_centre, status,
-- speed_kmh, course (degrees), acc_on, online, gps_time.
CREATE OR REPLACE FUNCTION reporting.fn_tile_live(
    p_z integer, p_x integer, p_y integer,
    p_cost_centre text DEFAULT NULL, p_acc_status text DEFAULT NULL)
RETURNS bytea
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
SET TimeZone = 'UTC'
SET jit = off
AS $$
DECLARE
    v_cc     text := reporting.filter_value(p_cost_centre);
    v_want   boolean;
    v_status text;
    v_box    geometry;
    result   bytea;
BEGIN
    PERFORM reporting.check_tile(p_z, p_x, p_y);
    SELECT f.want, f.status INTO v_want, v_status FROM reporting.acc_filter(p_acc_status) f;
    PERFORM reporting.check_filters(v_cc);
    -- a point needs only its symbol's radius of buffer: 128 units (1/32 of the tile, 16 px
    -- of a 512-px tile, 8 px of a 256-px one), not the 256 lines get (their joins and caps)
    v_box := ST_Transform(ST_TileEnvelope(p_z, p_x, p_y, margin => 128.0 / 4096), 4326);

    -- one scan: live_positions by its GiST index, the device by its key, the status and the
    -- label by the functions reporting.v_live_positions uses (the view's expressions, not
    -- the view: joining the view back to live_positions read every row twice — keep them in
    -- step with reporting.v_live_positions in R__reporting_core.sql); the point in tile units
    -- by arithmetic (reporting.tile_px / tile_py; the rows are points of the buffered tile)
    SELECT ST_AsMVT(t, 'live', 4096, 'geom') INTO result
    FROM (
        SELECT ST_MakePoint(round(reporting.tile_px(ST_X(g.geom), p_z, p_x)),
                            round(reporting.tile_py(ST_Y(g.geom), p_z, p_y))) AS geom,
               g.imei, l.label AS name, l.label AS vehicle_number, d.vehicle_name,
               d.driver_name, d.cost_centre, s.status, g.speed_kmh::float8 AS speed_kmh,
               g.direction_deg::integer AS course, g.acc_on, g.online,
               to_json(g.gps_time) #>> '{}' AS gps_time
        FROM tracksolid.live_positions g
        LEFT JOIN tracksolid.devices d ON d.imei = g.imei
        CROSS JOIN LATERAL (SELECT reporting.vehicle_status(g.online, g.acc_on, g.speed_kmh,
                                                            g.gps_time) AS status) s
        CROSS JOIN LATERAL (SELECT coalesce(tracksolid.vehicle_label(d), g.imei) AS label) l
        WHERE g.geom && v_box
          AND coalesce(d.is_active, true)
          AND (v_cc IS NULL OR lower(d.cost_centre) = lower(v_cc))
          AND (v_want IS NULL OR g.acc_on = v_want)
          AND (v_status IS NULL OR s.status = v_status)
        ORDER BY 4  -- vehicle_number
    ) t;
    RETURN coalesce(result, ''::bytea);
END
$$;

-- ── Tile coordinates by arithmetic ─────────────────────────────────────────────────────────
-- A WGS 84 longitude / latitude in the units of tile z/x/y (extent 4096, y downwards: 0 at
-- the tile's top edge), unrounded: Web Mercator by its formula (x = lng, y = asinh(tan lat)
-- on the unit world) instead of ST_Transform + ST_AsMVTGeom per row. Inlined by the planner
-- (SQL functions of one expression). round() of PostgreSQL float8 is rint(), the rounding of
-- ST_AsMVTGeom's grid, so a geometry inside the buffered tile gets the same integers.
CREATE OR REPLACE FUNCTION reporting.tile_px(p_lng float8, p_z integer, p_x integer)
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
-- written as lng * a + b with a and b of z / x only: folded to constants by the planner
RETURN p_lng * ((1::bigint << p_z) * 4096.0::float8 / 360.0::float8)
       + ((1::bigint << p_z) * 2048.0::float8 - p_x * 4096.0::float8);

CREATE OR REPLACE FUNCTION reporting.tile_py(p_lat float8, p_z integer, p_y integer)
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN asinh(tan(radians(p_lat))) * ((1::bigint << p_z) * -2048.0::float8 / pi())
       + ((1::bigint << p_z) * 2048.0::float8 - p_y * 4096.0::float8);

-- The MVT geometry of a trip drawn start → end (a Point when p_ex / p_ey are NULL: no end)
-- from its ends in tile units, rounded (tile_px / tile_py, round()), or NULL when nothing is
-- drawn — what ST_AsMVTGeom(ST_Transform(geom, 3857), envelope, 4096, 256, true) gives:
-- inside the buffered tile ([-256, 4352] on both axes) the geometry as it is, built by
-- arithmetic; a line is dropped when ST_AsMVTGeom drops it: p_tiny (its unrounded extent is
-- under half a unit both ways: ST_AsMVTGeom's "smaller than the resolution" shortcut) or
-- collapsed onto one integer point; a point outside the buffered tile is dropped; a line
-- leaving the buffered tile is clipped to it by ST_AsMVTGeom in tile units (y negated:
-- ST_AsMVTGeom flips y; bounds 0..4096, scale 1) — the cut point may differ by a unit from
-- a cut of the exact line, outside the tile proper (tests/test_tiles.py compares both on
-- random lines). One SQL expression: inlined into the calling query (no call per row).
CREATE OR REPLACE FUNCTION reporting.tile_trip_geom(
    p_sx float8, p_sy float8, p_ex float8, p_ey float8, p_tiny boolean)
RETURNS geometry
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN p_ex IS NULL OR p_ey IS NULL THEN
        CASE WHEN p_sx BETWEEN -256 AND 4352 AND p_sy BETWEEN -256 AND 4352
             THEN ST_MakePoint(p_sx, p_sy) END
    WHEN p_tiny OR (p_sx = p_ex AND p_sy = p_ey) THEN NULL
    WHEN least(p_sx, p_sy, p_ex, p_ey) >= -256 AND greatest(p_sx, p_sy, p_ex, p_ey) <= 4352
        THEN ST_MakeLine(ST_MakePoint(p_sx, p_sy), ST_MakePoint(p_ex, p_ey))
    ELSE ST_AsMVTGeom(ST_MakeLine(ST_MakePoint(p_sx, -p_sy), ST_MakePoint(p_ex, -p_ey)),
                      ST_MakeBox2D(ST_MakePoint(0, -4096), ST_MakePoint(4096, 0)), 4096, 256, true)
END;

-- ── Trips ──────────────────────────────────────────────────────────────────────────────────
-- The trips of the trips map (POST /webhook/fleet-dashboard, reporting.fn_trips_for_map_text)
-- starting in [p_start, p_end) — default the 7 days before p_end, p_end default now; at
-- most 366 days — filtered by vehicles (plates in any spelling or IMEIs), driver, cost centre
-- and city. Each trip is the map's LineString start → end (a Point when the end is unknown;
-- trips without a start position are not drawn). Trips whose start and end fall in the same
-- display pixels (8 × 8 of the 4096 units: a 512-pixel tile; at zoom 6 ~1.2 km, at zoom 14
-- ~5 m: trips from one depot to one site) are ONE feature — the last recorded of them
-- (highest trip_id), drawn with its own ends, with `trips` = how many they are — so a zoom-6
-- tile of a week of 1,000 vehicles holds thousands of lines, not 40,000 strokes on the same
-- pixels. Every line that differs by a pixel is drawn (no cap). Feature id = trip_id;
-- features in trip_id order (the order trips were recorded).
-- Properties up to zoom 11 (reporting.tile_trips_light_zoom()): trip_id and trips only — a
-- low-zoom tile of a busy area holds up to ~15,000 lines; what a map needs there is to draw
-- them and to look one up (GET the trip by id, or zoom in). From zoom 12: also imei,
-- vehicle_number (plate), vehicle_name, driver_name, cost_centre, start_time, end_time,
-- distance_km, driving_time_s, avg_speed_kmh, max_speed_kmh.
CREATE OR REPLACE FUNCTION reporting.tile_trips_light_zoom()
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 11;  -- up to this zoom a trips feature carries trip_id and trips only (see above)

-- The lines of a trips tile (see fn_tile_trips) as (trip_id, trips, geom in tile units).
-- One pass over the window's trips (the start-time index, then the bounding-box test of the
-- trip against the buffered tile b: exact and cheap), each trip's ends in tile units by
-- arithmetic, ONE hash aggregate by the four pixel cells — no sort, no join, no geometry
-- per trip. The last recorded trip of a cell pair AND its own ends come out of one max():
-- key = trip_id * 16384 + 8192 if the line is under half a unit (tile_trip_geom's p_tiny)
-- + the four offsets (0..8, rounded units) of its ends in their cells, base 9 (< 6,561) —
-- exact while trip_id < 2^49 (an identity column counting from 1).
CREATE OR REPLACE FUNCTION reporting.tile_trip_lines(
    p_z integer, p_x integer, p_y integer, b box2d, t0 timestamptz, t1 timestamptz,
    v_raw text[], v_plates text[], v_driver text, v_cc text, v_city text)
RETURNS TABLE (trip_id bigint, trips integer, geom geometry)
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT g.key >> 14, g.trips::integer,
           reporting.tile_trip_geom(
               g.cx0 * 8 + ((g.key & 8191) / 729), g.cy0 * 8 + ((g.key & 8191) / 81 % 9),
               CASE WHEN NOT g.point THEN g.cx1 * 8 + ((g.key & 8191) / 9 % 9) END,
               CASE WHEN NOT g.point THEN g.cy1 * 8 + ((g.key & 8191) % 9) END,
               (g.key & 8192) <> 0)
    FROM (
        SELECT c.cx0, c.cy0, c.cx1, c.cy1, c.point, count(*) AS trips,
               max(c.trip_id * 16384
                   + CASE WHEN abs(c.ex - c.sx) < 0.5 AND abs(c.ey - c.sy) < 0.5
                          THEN 8192 ELSE 0 END
                   + ((((round(c.sx) - c.cx0 * 8) * 9
                                         + (round(c.sy) - c.cy0 * 8)) * 9
                                        + (round(c.ex) - c.cx1 * 8)) * 9
                                       + (round(c.ey) - c.cy1 * 8))::bigint) AS key
        FROM (
            SELECT q.*, floor(q.sx / 8) AS cx0, floor(q.sy / 8) AS cy0,
                   floor(q.ex / 8) AS cx1, floor(q.ey / 8) AS cy1
            FROM (
                SELECT k.trip_id,
                       reporting.tile_px(k.start_lng, p_z, p_x) AS sx,
                       reporting.tile_py(k.start_lat, p_z, p_y) AS sy,
                       reporting.tile_px(coalesce(k.end_lng, k.start_lng), p_z, p_x) AS ex,
                       reporting.tile_py(coalesce(k.end_lat, k.start_lat), p_z, p_y) AS ey,
                       (k.end_lat IS NULL OR k.end_lng IS NULL) AS point
                FROM reporting.v_trips k
                WHERE k.start_time >= t0 AND k.start_time < t1
                  AND k.start_lat IS NOT NULL AND k.start_lng IS NOT NULL
                  AND least(k.start_lng, coalesce(k.end_lng, k.start_lng)) <= ST_XMax(b)
                  AND greatest(k.start_lng, coalesce(k.end_lng, k.start_lng)) >= ST_XMin(b)
                  AND least(k.start_lat, coalesce(k.end_lat, k.start_lat)) <= ST_YMax(b)
                  AND greatest(k.start_lat, coalesce(k.end_lat, k.start_lat)) >= ST_YMin(b)
                  -- the same two tests as one probe of ix_v_trips_extent_nd (0316): the
                  -- trip's extent in lat/lng × start epoch meets the tile × the window
                  AND reporting.trip_extent_nd(k.start_lng, k.start_lat, k.end_lng, k.end_lat,
                                               k.start_time)
                      &&& ST_MakeLine(
                          ST_MakePoint(ST_XMin(b), ST_YMin(b),
                                       extract(epoch FROM (t0 AT TIME ZONE 'UTC'))::float8),
                          ST_MakePoint(ST_XMax(b), ST_YMax(b),
                                       extract(epoch FROM (t1 AT TIME ZONE 'UTC'))::float8))
                  AND (v_raw IS NULL OR k.plate_norm = ANY(v_plates) OR k.imei = ANY(v_raw))
                  AND (v_driver IS NULL OR lower(k.driver_name) = lower(v_driver))
                  AND (v_cc IS NULL OR lower(k.cost_centre) = lower(v_cc))
                  AND (v_city IS NULL OR lower(k.city) = lower(v_city))
                OFFSET 0  -- not flattened: each end in tile units computed once per trip
            ) q
        ) c
        GROUP BY c.cx0, c.cy0, c.cx1, c.cy1, c.point
    ) g;
END;

CREATE OR REPLACE FUNCTION reporting.fn_tile_trips(
    p_z integer, p_x integer, p_y integer,
    p_vehicles text[] DEFAULT NULL, p_driver text DEFAULT NULL,
    p_cost_centre text DEFAULT NULL, p_city text DEFAULT NULL,
    p_start timestamptz DEFAULT NULL, p_end timestamptz DEFAULT NULL)
RETURNS bytea
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
SET TimeZone = 'UTC'
SET jit = off
SET work_mem = '64MB'  -- the grouping of a low-zoom tile's trips stays in memory
SET enable_sort = on  -- restored on exit: the low-zoom query turns it off (see there)
AS $$
DECLARE
    t1       timestamptz := coalesce(p_end, now());
    t0       timestamptz := coalesce(p_start, coalesce(p_end, now()) - interval '7 days');
    v_driver text := reporting.filter_value(p_driver);
    v_cc     text := reporting.filter_value(p_cost_centre);
    v_city   text := reporting.filter_value(p_city);
    v_raw    text[];
    v_plates text[];
    b        box2d;
    result   bytea;
BEGIN
    PERFORM reporting.check_tile(p_z, p_x, p_y);
    PERFORM reporting.check_trip_window(t0, t1);
    SELECT f.raw, f.plates INTO v_raw, v_plates FROM reporting.trip_vehicles(p_vehicles) f;
    PERFORM reporting.check_filters(v_cc, v_driver, v_city, v_raw, 'vehicles');
    b := reporting.tile_bbox(p_z, p_x, p_y);

    IF p_z <= reporting.tile_trips_light_zoom() THEN
        -- the trips' bounding-box test defeats the row estimate (4 inequalities on
        -- expressions: 1/81 of the window's trips), so the planner would sort the tile's
        -- tens of thousands of trips to group them; a hash aggregate is ~3× cheaper.
        -- enable_sort only tips the costs (the final ORDER BY still sorts); SET LOCAL of a
        -- setting the function SETs ends with the function.
        PERFORM set_config('enable_sort', 'off', true);
        SELECT ST_AsMVT(f, 'trips', 4096, 'geom', 'fid') INTO result
        FROM (
            SELECT l.geom, l.trip_id AS fid, l.trip_id, l.trips
            FROM reporting.tile_trip_lines(p_z, p_x, p_y, b, t0, t1, v_raw, v_plates, v_driver,
                                           v_cc, v_city) l
            ORDER BY l.trip_id
        ) f;
    ELSE
        SELECT ST_AsMVT(f, 'trips', 4096, 'geom', 'fid') INTO result
        FROM (
            SELECT l.geom, l.trip_id AS fid, l.trip_id, l.trips, t.imei, t.vehicle_number,
                   t.vehicle_name, t.driver_name, t.cost_centre,
                   to_json(t.start_time) #>> '{}' AS start_time,
                   to_json(t.end_time) #>> '{}' AS end_time,
                   t.distance_km::float8 AS distance_km, t.driving_time_s,
                   t.avg_speed_kmh::float8 AS avg_speed_kmh,
                   t.max_speed_kmh::float8 AS max_speed_kmh
            FROM reporting.tile_trip_lines(p_z, p_x, p_y, b, t0, t1, v_raw, v_plates, v_driver,
                                           v_cc, v_city) l
            JOIN reporting.v_trips t ON t.trip_id = l.trip_id
            ORDER BY l.trip_id  -- no "geom IS NOT NULL": ST_AsMVT skips NULL geometries, and
                                -- the test would build each geometry twice
        ) f;
    END IF;
    RETURN coalesce(result, ''::bytea);
END
$$;

-- ── Track of one vehicle ───────────────────────────────────────────────────────────────────
-- The fixes of GET /webhook/live-positions/track (same vehicle lookup: plate in any spelling
-- or IMEI; same window [p_start, p_end), at most 7 days; fixes flagged by the quality filter
-- left out), as one LineString per segment between two consecutive fixes, so a map can
-- colour the track by speed and show the time of any piece. Properties: imei,
-- vehicle_number, start_time / end_time (the two fixes' gps_time), speed_kmh (the speed
-- at the segment's first fix), end_speed_kmh, seq (the first fix's 1-based number in the
-- window). A single fix in the window is one Point (seq 1). Segments of the tile: those
-- whose bounding box meets the buffered tile (so a segment crossing the tile with both
-- fixes outside is drawn too). No thinning: the JSON answer thins above 20,000 points, a
-- tile draws every fix (a pixel-short segment is dropped by ST_AsMVTGeom at low zoom).
CREATE OR REPLACE FUNCTION reporting.fn_tile_track(
    p_z integer, p_x integer, p_y integer,
    p_vehicle_number text, p_start timestamptz, p_end timestamptz)
RETURNS bytea
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
SET TimeZone = 'UTC'
SET jit = off
AS $$
DECLARE
    dev    tracksolid.devices%ROWTYPE;
    v_env  box2d;
    b      box2d;
    result bytea;
BEGIN
    PERFORM reporting.check_tile(p_z, p_x, p_y);
    IF reporting.filter_value(p_vehicle_number) IS NULL THEN
        RAISE EXCEPTION 'imei is required (an IMEI, or a plate such as "KCA 542Q")'
            USING ERRCODE = '22023';
    END IF;
    dev := reporting.track_device(p_vehicle_number, p_start, p_end);
    v_env := box2d(ST_TileEnvelope(p_z, p_x, p_y));
    b := reporting.tile_bbox(p_z, p_x, p_y);

    WITH fixes AS (
        SELECT ph.gps_time, ph.lat, ph.lng, ph.speed_kmh,
               row_number() OVER w AS seq, count(*) OVER () AS n,
               lead(ph.gps_time) OVER w AS t_next, lead(ph.lat) OVER w AS lat_next,
               lead(ph.lng) OVER w AS lng_next, lead(ph.speed_kmh) OVER w AS speed_next
        FROM tracksolid.position_history ph
        WHERE ph.imei = dev.imei AND ph.gps_time >= p_start AND ph.gps_time < p_end
          AND ph.quality_flag IS NULL
        WINDOW w AS (ORDER BY ph.gps_time)
    ), pieces AS (
        SELECT CASE WHEN f.n = 1 THEN ST_MakePoint(f.lng, f.lat)
                    ELSE ST_MakeLine(ST_MakePoint(f.lng, f.lat),
                                     ST_MakePoint(f.lng_next, f.lat_next)) END AS g,
               f.*
        FROM fixes f
        WHERE (f.n = 1 OR f.t_next IS NOT NULL)
          AND least(f.lng, coalesce(f.lng_next, f.lng)) <= ST_XMax(b)
          AND greatest(f.lng, coalesce(f.lng_next, f.lng)) >= ST_XMin(b)
          AND least(f.lat, coalesce(f.lat_next, f.lat)) <= ST_YMax(b)
          AND greatest(f.lat, coalesce(f.lat_next, f.lat)) >= ST_YMin(b)
    )
    SELECT ST_AsMVT(s, 'track', 4096, 'geom') INTO result
    FROM (
        SELECT ST_AsMVTGeom(ST_Transform(ST_SetSRID(p.g, 4326), 3857), v_env, 4096, 256, true)
                   AS geom,
               dev.imei AS imei, tracksolid.vehicle_label(dev) AS vehicle_number,
               p.seq::integer AS seq,
               to_json(p.gps_time) #>> '{}' AS start_time,
               to_json(coalesce(p.t_next, p.gps_time)) #>> '{}' AS end_time,
               p.speed_kmh::float8 AS speed_kmh, p.speed_next::float8 AS end_speed_kmh
        FROM pieces p
        ORDER BY p.gps_time
    ) s
    WHERE s.geom IS NOT NULL;
    RETURN coalesce(result, ''::bytea);
END
$$;

-- ── TileJSON bounds ────────────────────────────────────────────────────────────────────────
-- [west, south, east, north] of what a layer shows for the filters (live: the vehicles'
-- positions; trips: the window's start/end points; track: the window's fixes), or NULL
-- when nothing matches. Filters are checked like the tiles' (22023).
CREATE OR REPLACE FUNCTION reporting.fn_tile_bounds(
    p_layer text, p_cost_centre text DEFAULT NULL, p_acc_status text DEFAULT NULL,
    p_vehicles text[] DEFAULT NULL, p_driver text DEFAULT NULL, p_city text DEFAULT NULL,
    p_start timestamptz DEFAULT NULL, p_end timestamptz DEFAULT NULL,
    p_vehicle_number text DEFAULT NULL)
RETURNS float8[]
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
SET TimeZone = 'UTC'
SET jit = off
AS $$
DECLARE
    v_cc    text := reporting.filter_value(p_cost_centre);
    v_want  boolean;
    v_status text;
    v_raw   text[];
    v_plates text[];
    v_imei  text;
    t1      timestamptz := coalesce(p_end, now());
    t0      timestamptz := coalesce(p_start, coalesce(p_end, now()) - interval '7 days');
    result  float8[];
BEGIN
    IF p_layer = 'live' THEN
        SELECT f.want, f.status INTO v_want, v_status FROM reporting.acc_filter(p_acc_status) f;
        PERFORM reporting.check_filters(v_cc);
        SELECT ARRAY[min(lp.lng), min(lp.lat), max(lp.lng), max(lp.lat)] INTO result
        FROM reporting.v_live_positions lp
        WHERE (v_cc IS NULL OR lower(lp.cost_centre) = lower(v_cc))
          AND (v_want IS NULL OR lp.acc_on = v_want)
          AND (v_status IS NULL OR lp.status = v_status);
    ELSIF p_layer = 'trips' THEN
        SELECT f.raw, f.plates INTO v_raw, v_plates FROM reporting.trip_vehicles(p_vehicles) f;
        PERFORM reporting.check_filters(v_cc, p_driver, p_city, v_raw, 'vehicles');
        SELECT ARRAY[least(min(t.start_lng), min(t.end_lng)),
                     least(min(t.start_lat), min(t.end_lat)),
                     greatest(max(t.start_lng), max(t.end_lng)),
                     greatest(max(t.start_lat), max(t.end_lat))] INTO result
        FROM reporting.v_trips t
        WHERE t.start_time >= t0 AND t.start_time < t1
          AND (v_raw IS NULL OR t.plate_norm = ANY(v_plates) OR t.imei = ANY(v_raw))
          AND (reporting.filter_value(p_driver) IS NULL
               OR lower(t.driver_name) = lower(btrim(p_driver)))
          AND (v_cc IS NULL OR lower(t.cost_centre) = lower(v_cc))
          AND (reporting.filter_value(p_city) IS NULL OR lower(t.city) = lower(btrim(p_city)));
    ELSIF p_layer = 'track' THEN
        v_imei := (reporting.track_device(p_vehicle_number, t0, t1)).imei;
        SELECT ARRAY[min(ph.lng), min(ph.lat), max(ph.lng), max(ph.lat)] INTO result
        FROM tracksolid.position_history ph
        WHERE ph.imei = v_imei AND ph.gps_time >= t0 AND ph.gps_time < t1
          AND ph.quality_flag IS NULL;
    ELSE
        RAISE EXCEPTION 'unknown layer "%" (live, trips or track)', p_layer
            USING ERRCODE = '22023';
    END IF;
    RETURN CASE WHEN result[1] IS NULL THEN NULL ELSE result END;
END
$$;

REVOKE EXECUTE ON FUNCTION reporting.fn_tile_live(integer, integer, integer, text, text)
    FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION reporting.fn_tile_trips(integer, integer, integer, text[], text, text,
                                                   text, timestamptz, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION reporting.fn_tile_track(integer, integer, integer, text, timestamptz,
                                                   timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION reporting.fn_tile_bounds(text, text, text, text[], text, text,
                                                    timestamptz, timestamptz, text) FROM PUBLIC;
