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
-- ST_AsMVTGeom's 256 of 4096), is transformed ONCE to WGS 84 (reporting.tile_bbox) and the
-- rows are compared in their own coordinates (the GiST index of live_positions.geom, plain
-- lat/lng comparisons after the time index for trips and fixes) — never one ST_Transform per
-- row before the filter. A Web Mercator rectangle is a lat/lng rectangle, so the test is exact.
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
    v_acc    text := lower(reporting.filter_value(p_acc_status));
    v_want   boolean;
    v_status text;
    v_env    geometry;
    v_box    geometry;
    result   bytea;
BEGIN
    PERFORM reporting.check_tile(p_z, p_x, p_y);
    IF v_acc IS NULL THEN
        NULL;
    ELSIF v_acc IN ('on', '1', 'true') THEN
        v_want := true;
    ELSIF v_acc IN ('off', '0', 'false') THEN
        v_want := false;
    ELSIF v_acc IN ('moving', 'idle', 'parked', 'offline') THEN
        v_status := v_acc;
    ELSE
        RAISE EXCEPTION 'acc_status must be one of on, off, moving, idle, parked, offline or all (got "%")',
            p_acc_status USING ERRCODE = '22023';
    END IF;
    PERFORM reporting.check_filters(v_cc);
    v_env := ST_TileEnvelope(p_z, p_x, p_y);
    v_box := ST_SetSRID(reporting.tile_bbox(p_z, p_x, p_y)::geometry, 4326);

    SELECT ST_AsMVT(t, 'live', 4096, 'geom') INTO result
    FROM (
        SELECT ST_AsMVTGeom(ST_Transform(g.geom, 3857), v_env::box2d, 4096, 256, true) AS geom,
               lp.imei, lp.vehicle_number AS name, lp.vehicle_number, lp.vehicle_name,
               lp.driver_name, lp.cost_centre, lp.status, lp.speed_kmh::float8 AS speed_kmh,
               lp.direction_deg::integer AS course, lp.acc_on, lp.online,
               to_json(lp.gps_time) #>> '{}' AS gps_time
        FROM tracksolid.live_positions g
        JOIN reporting.v_live_positions lp ON lp.imei = g.imei
        WHERE g.geom && v_box
          AND (v_cc IS NULL OR lower(lp.cost_centre) = lower(v_cc))
          AND (v_want IS NULL OR lp.acc_on = v_want)
          AND (v_status IS NULL OR lp.status = v_status)
        ORDER BY lp.vehicle_number
    ) t
    WHERE t.geom IS NOT NULL;
    RETURN coalesce(result, ''::bytea);
END
$$;

-- ── Trips ──────────────────────────────────────────────────────────────────────────────────
-- The trips of the trips map (POST /webhook/fleet-dashboard, reporting.fn_trips_for_map_text)
-- starting in [p_start, p_end) — default the 7 days before p_end, p_end default now; at
-- most 366 days — filtered by vehicles (plates in any spelling or IMEIs), driver, cost centre
-- and city. Each trip is the map's LineString start → end (a Point when the end is unknown;
-- trips without a start position are not drawn). Trips whose start and end fall in the same
-- cells of a grid of one display pixel (a 512th of the tile, as a map shows it; at zoom 6
-- ~1.2 km, at zoom 14 ~5 m: trips from one depot to one site) are ONE feature — the last
-- recorded of them (highest trip_id), drawn with its own ends, with `trips` = how many they
-- are — so a zoom-6 tile of a week of 1,000 vehicles holds thousands of lines, not 40,000
-- strokes on the same pixels. Every line that differs by a pixel is drawn (no cap).
-- Feature id = trip_id (also a property).
-- Properties: trip_id, trips, imei, vehicle_number (plate), vehicle_name, driver_name,
-- cost_centre, start_time, end_time, distance_km, driving_time_s, avg_speed_kmh, max_speed_kmh.
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
AS $$
DECLARE
    t1       timestamptz := coalesce(p_end, now());
    t0       timestamptz := coalesce(p_start, coalesce(p_end, now()) - interval '7 days');
    v_driver text := reporting.filter_value(p_driver);
    v_cc     text := reporting.filter_value(p_cost_centre);
    v_city   text := reporting.filter_value(p_city);
    v_raw    text[];
    v_plates text[];
    v_env    box2d;
    b        box2d;
    v_cell_x float8;
    v_cell_y float8;
    result   bytea;
BEGIN
    PERFORM reporting.check_tile(p_z, p_x, p_y);
    IF t1 < t0 THEN
        RAISE EXCEPTION 'end (%) is before start (%)', t1, t0 USING ERRCODE = '22023';
    END IF;
    IF t1 - t0 > interval '366 days' THEN
        RAISE EXCEPTION 'the date range is limited to 366 days (got % days)',
            ceil(extract(epoch FROM t1 - t0) / 86400) USING ERRCODE = '22023';
    END IF;
    SELECT array_agg(DISTINCT btrim(v)) INTO v_raw
    FROM unnest(p_vehicles) v WHERE reporting.filter_value(v) IS NOT NULL;
    PERFORM reporting.check_filters(v_cc, v_driver, v_city, v_raw, 'vehicles');
    SELECT array_agg(DISTINCT reporting.normalize_plate(r)) INTO v_plates FROM unnest(v_raw) r;
    v_env := box2d(ST_TileEnvelope(p_z, p_x, p_y));
    b := reporting.tile_bbox(p_z, p_x, p_y);

    -- the merge cell in degrees: one display pixel of a 512-pixel tile (8 of the 4096 MVT
    -- units) east-west; north-south the Mercator cell at the tile's middle latitude (a tile
    -- spans little latitude where trips are drawn)
    v_cell_x := (ST_XMax(b) - ST_XMin(b)) * 16 / 18 / 512;  -- b: the tile + 1/16 each side
    v_cell_y := v_cell_x * cos(radians(greatest(-85.0, least(85.0, (ST_YMin(b) + ST_YMax(b)) / 2))));
    SELECT ST_AsMVT(f, 'trips', 4096, 'geom', 'fid') INTO result
    FROM (
        SELECT ST_AsMVTGeom(ST_Transform(CASE
                   WHEN t.end_lat IS NULL OR t.end_lng IS NULL
                   THEN ST_SetSRID(ST_MakePoint(t.start_lng, t.start_lat), 4326)
                   ELSE ST_SetSRID(ST_MakeLine(ST_MakePoint(t.start_lng, t.start_lat),
                                               ST_MakePoint(t.end_lng, t.end_lat)), 4326)
                   END, 3857), v_env, 4096, 256, true) AS geom,
               t.trip_id AS fid, t.trip_id, g.trips, t.imei, t.vehicle_number, t.vehicle_name,
               t.driver_name, t.cost_centre, to_json(t.start_time) #>> '{}' AS start_time,
               to_json(t.end_time) #>> '{}' AS end_time,
               t.distance_km::float8 AS distance_km, t.driving_time_s,
               t.avg_speed_kmh::float8 AS avg_speed_kmh,
               t.max_speed_kmh::float8 AS max_speed_kmh
        FROM (
            -- one feature per line on the grid: the trips whose ends fall on the same cells
            -- (integers hashed, no geometry built) → the last recorded of them and how many
            SELECT max(k.trip_id) AS trip_id, count(*)::integer AS trips
            FROM reporting.v_trips k
            WHERE k.start_time >= t0 AND k.start_time < t1
              AND k.start_lat IS NOT NULL AND k.start_lng IS NOT NULL
              -- the trip's bounding box meets the buffered tile (exact, cheap)
              AND least(k.start_lng, coalesce(k.end_lng, k.start_lng)) <= ST_XMax(b)
              AND greatest(k.start_lng, coalesce(k.end_lng, k.start_lng)) >= ST_XMin(b)
              AND least(k.start_lat, coalesce(k.end_lat, k.start_lat)) <= ST_YMax(b)
              AND greatest(k.start_lat, coalesce(k.end_lat, k.start_lat)) >= ST_YMin(b)
              AND (v_raw IS NULL OR k.plate_norm = ANY(v_plates) OR k.imei = ANY(v_raw))
              AND (v_driver IS NULL OR lower(k.driver_name) = lower(v_driver))
              AND (v_cc IS NULL OR lower(k.cost_centre) = lower(v_cc))
              AND (v_city IS NULL OR lower(k.city) = lower(v_city))
            GROUP BY floor(k.start_lng / v_cell_x)::bigint, floor(k.start_lat / v_cell_y)::bigint,
                     floor(coalesce(k.end_lng, k.start_lng) / v_cell_x)::bigint,
                     floor(coalesce(k.end_lat, k.start_lat) / v_cell_y)::bigint,
                     (k.end_lat IS NULL OR k.end_lng IS NULL)
        ) g
        JOIN reporting.v_trips t ON t.trip_id = g.trip_id
        ORDER BY t.start_time, t.trip_id
    ) f
    WHERE f.geom IS NOT NULL;
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
    IF p_start IS NULL OR p_end IS NULL THEN
        RAISE EXCEPTION 'start and end are required' USING ERRCODE = '22023';
    END IF;
    IF p_end <= p_start THEN
        RAISE EXCEPTION 'end (%) must be after start (%)', p_end, p_start USING ERRCODE = '22023';
    END IF;
    IF p_end - p_start > interval '7 days' THEN
        RAISE EXCEPTION 'a track spans at most 7 days (168 hours)' USING ERRCODE = '22023';
    END IF;
    SELECT * INTO dev FROM tracksolid.devices d
    WHERE d.plate_norm = reporting.normalize_plate(p_vehicle_number)
       OR d.imei = btrim(p_vehicle_number)
    ORDER BY d.is_active DESC, (d.imei = btrim(p_vehicle_number)) DESC
    LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown vehicle "%" — see /analytics/filters',
            btrim(p_vehicle_number) USING ERRCODE = '22023';
    END IF;
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
    v_acc   text := lower(reporting.filter_value(p_acc_status));
    v_raw   text[];
    v_plates text[];
    v_imei  text;
    t1      timestamptz := coalesce(p_end, now());
    t0      timestamptz := coalesce(p_start, coalesce(p_end, now()) - interval '7 days');
    result  float8[];
BEGIN
    IF p_layer = 'live' THEN
        PERFORM reporting.check_filters(v_cc);
        SELECT ARRAY[min(lp.lng), min(lp.lat), max(lp.lng), max(lp.lat)] INTO result
        FROM reporting.v_live_positions lp
        WHERE (v_cc IS NULL OR lower(lp.cost_centre) = lower(v_cc))
          AND (v_acc IS NULL
               OR (v_acc IN ('on', '1', 'true') AND lp.acc_on)
               OR (v_acc IN ('off', '0', 'false') AND NOT lp.acc_on)
               OR lp.status = v_acc);
    ELSIF p_layer = 'trips' THEN
        SELECT array_agg(DISTINCT btrim(v)) INTO v_raw
        FROM unnest(p_vehicles) v WHERE reporting.filter_value(v) IS NOT NULL;
        PERFORM reporting.check_filters(v_cc, p_driver, p_city, v_raw, 'vehicles');
        SELECT array_agg(DISTINCT reporting.normalize_plate(r)) INTO v_plates
        FROM unnest(v_raw) r;
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
        SELECT d.imei INTO v_imei FROM tracksolid.devices d
        WHERE d.plate_norm = reporting.normalize_plate(p_vehicle_number)
           OR d.imei = btrim(p_vehicle_number)
        ORDER BY d.is_active DESC, (d.imei = btrim(p_vehicle_number)) DESC
        LIMIT 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'unknown vehicle "%" — see /analytics/filters',
                btrim(p_vehicle_number) USING ERRCODE = '22023';
        END IF;
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
