-- Repeatable · the read-API's entry points (seed 002 DATA_FLOW L4): functions returning the
-- whole JSON / GeoJSON answer, so dashboard_api passes the text through unchanged.
--
-- Conventions of every function here:
-- * SECURITY DEFINER with a fixed search_path: the read-only role `dashboard_ro` may only use
--   schema `reporting`; these functions read `tracksolid.*` with their owner's rights.
-- * SET TimeZone = 'UTC': timestamps come out as ISO-8601 with +00:00, whatever the session.
-- * GeoJSON is built from lat/lng with json_build_array(lng, lat) — RFC 7946 [lon, lat]
--   order, JSON numbers — without PostGIS, so the same functions run on the TimescaleDB test
--   server that has no PostGIS.
-- * Bad parameters raise SQLSTATE 22023 (invalid_parameter_value) with a sentence meant for
--   a dashboard developer; dashboard_api turns that into HTTP 422 with the same text.
-- * "all" / empty string / NULL mean "no filter" for text filters; a filter value that matches
--   nothing in the registry is refused (reporting.check_filters) rather than answered with
--   zeros: 'unknown cost_centre "X" — see /analytics/filters'.

-- fn_trips_for_map_text gained p_start_given / p_end_given (the caller's text, echoed in the
-- summary): drop the 8-argument form, and its json wrapper that depends on it (both are
-- created again below).
DROP FUNCTION IF EXISTS reporting.fn_trips_for_map(text[], text, text, text, timestamptz,
                                                   timestamptz, integer, boolean);
DROP FUNCTION IF EXISTS reporting.fn_trips_for_map_text(text[], text, text, text, timestamptz,
                                                        timestamptz, integer, boolean);
-- ...and it gained p_after_time / p_after_id (the keyset cursor of the pages, issue #19).
DROP FUNCTION IF EXISTS reporting.fn_trips_for_map_text(text[], text, text, text, timestamptz,
                                                        timestamptz, integer, boolean, text,
                                                        text);

-- Normalise a text filter: NULL for '', 'all', '*'.
CREATE OR REPLACE FUNCTION reporting.filter_value(p text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN lower(btrim(p)) IN ('', 'all', '*') THEN NULL ELSE btrim(p) END;

-- The acc_status filter of the live map and its tiles: "on"/"1"/"true" or "off"/"0"/"false"
-- filter on the ignition (want), "moving"/"idle"/"parked"/"offline" on the status word
-- (status), empty/"all" on nothing; anything else is refused with SQLSTATE 22023.
CREATE OR REPLACE FUNCTION reporting.acc_filter(
    p_acc_status text, OUT want boolean, OUT status text)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    v text := lower(reporting.filter_value(p_acc_status));
BEGIN
    IF v IS NULL THEN
        RETURN;
    ELSIF v IN ('on', '1', 'true') THEN
        want := true;
    ELSIF v IN ('off', '0', 'false') THEN
        want := false;
    ELSIF v IN ('moving', 'idle', 'parked', 'offline') THEN
        status := v;
    ELSE
        RAISE EXCEPTION 'acc_status must be one of on, off, moving, idle, parked, offline or all (got "%")',
            p_acc_status USING ERRCODE = '22023';
    END IF;
END
$$;

-- Refuse a filter value that matches nothing: SQLSTATE 22023
-- 'unknown cost_centre "X" — see /analytics/filters' (dashboard_api answers 422 with it).
-- Case-insensitive like the filters; vehicles by plate in any spelling or by IMEI, and with
-- p_fuel also a plate that only appears in fuel fills. Every registry vehicle counts (also
-- inactive ones, whose history the trips map shows). One index probe per given value
-- (devices: plate_norm, imei, lower(cost_centre|driver_name|city) — 0910_filter_lookup_indexes).
CREATE OR REPLACE FUNCTION reporting.check_filters(
    p_cost_centre text DEFAULT NULL, p_driver text DEFAULT NULL, p_city text DEFAULT NULL,
    p_vehicles text[] DEFAULT NULL, p_vehicle_field text DEFAULT 'vehicle_number',
    p_fuel boolean DEFAULT false)
RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_cc      text := reporting.filter_value(p_cost_centre);
    v_driver  text := reporting.filter_value(p_driver);
    v_city    text := reporting.filter_value(p_city);
    v_unknown text;
BEGIN
    IF v_cc IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM tracksolid.devices d WHERE lower(d.cost_centre) = lower(v_cc)) THEN
        RAISE EXCEPTION 'unknown cost_centre "%" — see /analytics/filters', v_cc
            USING ERRCODE = '22023';
    END IF;
    -- a former driver (driver_assignments) is known too: their trips keep their name
    IF v_driver IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM tracksolid.devices d WHERE lower(d.driver_name) = lower(v_driver))
       AND NOT EXISTS (
            SELECT 1 FROM tracksolid.driver_assignments a
            WHERE lower(a.driver_name) = lower(v_driver)) THEN
        RAISE EXCEPTION 'unknown driver "%" — see /analytics/filters', v_driver
            USING ERRCODE = '22023';
    END IF;
    IF v_city IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM tracksolid.devices d WHERE lower(d.city) = lower(v_city)) THEN
        RAISE EXCEPTION 'unknown city "%" — see /analytics/filters', v_city
            USING ERRCODE = '22023';
    END IF;
    SELECT string_agg(format('"%s"', x.r), ', ' ORDER BY x.r) INTO v_unknown
    FROM (SELECT DISTINCT btrim(v) AS r FROM unnest(p_vehicles) v
          WHERE reporting.filter_value(v) IS NOT NULL) x
    WHERE NOT EXISTS (SELECT 1 FROM tracksolid.devices d
                      WHERE d.plate_norm = reporting.normalize_plate(x.r) OR d.imei = x.r)
      AND NOT (p_fuel AND EXISTS (SELECT 1 FROM fuel.records f
                                  WHERE f.plate_norm = reporting.normalize_plate(x.r)));
    IF v_unknown IS NOT NULL THEN
        RAISE EXCEPTION 'unknown % % — see /analytics/filters', p_vehicle_field, v_unknown
            USING ERRCODE = '22023';
    END IF;
    RETURN true;
END
$$;

-- ── Filter options ─────────────────────────────────────────────────────────────────────────
CREATE OR REPLACE FUNCTION reporting.fn_filter_options()
RETURNS json
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
SET TimeZone = 'UTC'
AS $$
    SELECT json_build_object(
        'vehicles', (SELECT coalesce(json_agg(json_build_object(
                         'vehicle_number', v.vehicle_number, 'vehicle_name', v.vehicle_name,
                         'imei', v.imei, 'driver_name', v.driver_name,
                         'cost_centre', v.cost_centre, 'city', v.city,
                         'vehicle_type', v.vehicle_type, 'poll_state', v.poll_state,
                         'push_only', v.push_only, 'expiration', v.expiration)
                         ORDER BY v.vehicle_number), '[]')
                     FROM reporting.v_filter_vehicles v),
        'drivers', (SELECT coalesce(json_agg(d.driver_name ORDER BY d.driver_name), '[]')
                    FROM reporting.v_filter_drivers d),
        'cost_centres', (SELECT coalesce(json_agg(c.cost_centre ORDER BY c.cost_centre), '[]')
                         FROM reporting.v_filter_cost_centres c),
        'cities', (SELECT coalesce(json_agg(c.city ORDER BY c.city), '[]')
                   FROM reporting.v_filter_cities c),
        'clusters', (SELECT coalesce(json_agg(k.cluster ORDER BY k.cluster), '[]')
                     FROM (SELECT DISTINCT i.cluster FROM tickets.inc i
                           WHERE btrim(i.cluster) <> '') k)
    )
$$;

-- ── Live positions ─────────────────────────────────────────────────────────────────────────
-- acc_status: on | off (ignition), or a status word moving | idle | parked | offline; all/''.
CREATE OR REPLACE FUNCTION reporting.fn_live_positions(
    p_cost_centre text DEFAULT NULL, p_acc_status text DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_cc     text := reporting.filter_value(p_cost_centre);
    v_acc    text := lower(reporting.filter_value(p_acc_status));
    v_want   boolean;
    v_status text;
    result   json;
BEGIN
    SELECT f.want, f.status INTO v_want, v_status FROM reporting.acc_filter(p_acc_status) f;
    PERFORM reporting.check_filters(v_cc);

    SELECT json_build_object(
        'type', 'FeatureCollection',
        'features', coalesce(json_agg(json_build_object(
            'type', 'Feature',
            'id', lp.imei,
            'geometry', json_build_object('type', 'Point',
                                          'coordinates', json_build_array(lp.lng, lp.lat)),
            'properties', json_build_object(
                'imei', lp.imei, 'vehicle_number', lp.vehicle_number,
                'vehicle_name', lp.vehicle_name, 'driver_name', lp.driver_name,
                'driver_phone', lp.driver_phone, 'cost_centre', lp.cost_centre,
                'city', lp.city, 'vehicle_type', lp.vehicle_type, 'gps_time', lp.gps_time,
                'speed_kmh', lp.speed_kmh, 'direction_deg', lp.direction_deg,
                'acc_on', lp.acc_on, 'online', lp.online, 'status', lp.status,
                'fix_age_s', lp.fix_age_s, 'loc_desc', lp.loc_desc,
                'battery_pct', lp.battery_pct))
            ORDER BY lp.vehicle_number), '[]'),
        'summary', json_build_object(
            'vehicles', count(*),
            'moving', count(*) FILTER (WHERE lp.status = 'moving'),
            'idle', count(*) FILTER (WHERE lp.status = 'idle'),
            'parked', count(*) FILTER (WHERE lp.status = 'parked'),
            'offline', count(*) FILTER (WHERE lp.status = 'offline'),
            'cost_centre', v_cc,
            'acc_status', v_acc,
            'latest_fix', max(lp.gps_time),
            'generated_at', now()))
    INTO result
    FROM reporting.v_live_positions lp
    WHERE (v_cc IS NULL OR lower(lp.cost_centre) = lower(v_cc))
      AND (v_want IS NULL OR lp.acc_on = v_want)
      AND (v_status IS NULL OR lp.status = v_status);
    RETURN result;
END
$$;

-- The vehicle and window of a track (the JSON track and the track tiles): the window
-- [p_start, p_end) is required, ends after it starts and spans at most 7 days; the vehicle
-- is a plate in any spelling or an IMEI (an active device first, an exact IMEI first).
-- Refusals are SQLSTATE 22023 (dashboard_api answers 422 with the message).
CREATE OR REPLACE FUNCTION reporting.track_device(
    p_vehicle_number text, p_start timestamptz, p_end timestamptz)
RETURNS tracksolid.devices
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, public
AS $$
DECLARE
    dev tracksolid.devices%ROWTYPE;
BEGIN
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
        RAISE EXCEPTION 'unknown vehicle_number "%" — see /analytics/filters',
            btrim(p_vehicle_number) USING ERRCODE = '22023';
    END IF;
    RETURN dev;
END
$$;

-- ── Track of one vehicle ───────────────────────────────────────────────────────────────────
-- A LineString of the fixes in the window [p_start, p_end) (at most 7 days, issue #18) plus
-- start/end points. Fixes flagged by the ingest quality filter (quality_flag) are left out.
-- Above `p_max_points` the line is thinned evenly (first and last fix kept); the summary
-- reports it. `times` / `speeds_kmh` are aligned with the coordinates for playback. Distance
-- is the haversine sum of all fixes. summary.hours is the window's length in hours.
CREATE OR REPLACE FUNCTION reporting.fn_vehicle_track_range(
    p_vehicle_number text, p_start timestamptz, p_end timestamptz,
    p_max_points integer DEFAULT 20000)
RETURNS json
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
SET TimeZone = 'UTC'
AS $$
DECLARE
    dev     tracksolid.devices%ROWTYPE;
    t0      timestamptz := p_start;
    t1      timestamptz := p_end;
    v_hours numeric;
    result  json;
BEGIN
    IF reporting.filter_value(p_vehicle_number) IS NULL THEN
        RAISE EXCEPTION 'vehicle_number is required (a plate such as "KCA 542Q" or an IMEI)'
            USING ERRCODE = '22023';
    END IF;
    IF p_max_points IS NULL OR p_max_points < 2 THEN
        RAISE EXCEPTION 'max_points must be at least 2' USING ERRCODE = '22023';
    END IF;
    dev := reporting.track_device(p_vehicle_number, t0, t1);
    v_hours := trim_scale(round(extract(epoch FROM t1 - t0) / 3600, 2));

    WITH fixes AS (
        SELECT ph.gps_time, ph.lat, ph.lng, ph.speed_kmh,
               row_number() OVER (ORDER BY ph.gps_time) AS rn,
               count(*) OVER () AS n,
               lag(ph.lat) OVER (ORDER BY ph.gps_time) AS plat,
               lag(ph.lng) OVER (ORDER BY ph.gps_time) AS plng
        FROM tracksolid.position_history ph
        WHERE ph.imei = dev.imei AND ph.gps_time >= t0 AND ph.gps_time < t1
          AND ph.quality_flag IS NULL
    ), stats AS (
        SELECT count(*) AS n, min(gps_time) AS first_at, max(gps_time) AS last_at,
               max(speed_kmh) AS vmax,
               round(coalesce(sum(2 * 6371.0088 * asin(least(1, sqrt(
                   power(sin(radians(lat - plat) / 2), 2)
                   + cos(radians(plat)) * cos(radians(lat))
                     * power(sin(radians(lng - plng) / 2), 2))))) FILTER (WHERE plat IS NOT NULL),
                   0)::numeric, 3) AS km
        FROM fixes
    ), kept AS (
        SELECT f.* FROM fixes f
        WHERE f.n <= p_max_points OR f.rn = f.n
           OR (f.rn - 1) % ceil(f.n::numeric / (p_max_points - 1))::bigint = 0
    ), line AS (
        SELECT count(*) AS kept_n,
               json_agg(json_build_array(k.lng, k.lat) ORDER BY k.gps_time) AS coords,
               json_agg(k.gps_time ORDER BY k.gps_time) AS times,
               json_agg(k.speed_kmh ORDER BY k.gps_time) AS speeds,
               (array_agg(json_build_array(k.lng, k.lat) ORDER BY k.gps_time ASC))[1] AS first_pt,
               (array_agg(json_build_array(k.lng, k.lat) ORDER BY k.gps_time DESC))[1] AS last_pt
        FROM kept k
    ), excluded AS (
        SELECT count(*) AS n FROM tracksolid.position_history ph
        WHERE ph.imei = dev.imei AND ph.gps_time >= t0 AND ph.gps_time < t1
          AND ph.quality_flag IS NOT NULL
    )
    SELECT json_build_object(
        'type', 'FeatureCollection',
        'features', CASE
            WHEN s.n = 0 THEN '[]'::json
            WHEN s.n = 1 THEN json_build_array(json_build_object(
                'type', 'Feature', 'id', 'last',
                'geometry', json_build_object('type', 'Point', 'coordinates', l.last_pt),
                'properties', json_build_object('role', 'last', 'imei', dev.imei,
                                                'gps_time', s.last_at)))
            ELSE json_build_array(
                json_build_object(
                    'type', 'Feature', 'id', 'track',
                    'geometry', json_build_object('type', 'LineString', 'coordinates', l.coords),
                    'properties', json_build_object(
                        'role', 'track', 'imei', dev.imei,
                        'vehicle_number', tracksolid.vehicle_label(dev),
                        'driver_name', dev.driver_name, 'cost_centre', dev.cost_centre,
                        'start_time', s.first_at, 'end_time', s.last_at,
                        'distance_km', s.km, 'max_speed_kmh', s.vmax,
                        'times', l.times, 'speeds_kmh', l.speeds)),
                json_build_object(
                    'type', 'Feature', 'id', 'start',
                    'geometry', json_build_object('type', 'Point', 'coordinates', l.first_pt),
                    'properties', json_build_object('role', 'start', 'imei', dev.imei,
                                                    'gps_time', s.first_at)),
                json_build_object(
                    'type', 'Feature', 'id', 'end',
                    'geometry', json_build_object('type', 'Point', 'coordinates', l.last_pt),
                    'properties', json_build_object('role', 'end', 'imei', dev.imei,
                                                    'gps_time', s.last_at)))
        END,
        'summary', json_build_object(
            'imei', dev.imei, 'vehicle_number', tracksolid.vehicle_label(dev),
            'driver_name', dev.driver_name, 'cost_centre', dev.cost_centre,
            'hours', v_hours, 'start', t0, 'end', t1,
            'points_total', s.n, 'points_returned', l.kept_n,
            'points_excluded_flagged', e.n,
            'capped', s.n > p_max_points, 'cap', p_max_points,
            'distance_km', s.km, 'max_speed_kmh', s.vmax,
            'first_fix', s.first_at, 'last_fix', s.last_at,
            'generated_at', now()))
    INTO result
    FROM stats s, line l, excluded e;
    RETURN result;
END
$$;

-- The track of the last `p_hours` (1–168) up to now: the window (now - p_hours, now].
CREATE OR REPLACE FUNCTION reporting.fn_vehicle_track(
    p_vehicle_number text, p_hours integer DEFAULT 24, p_max_points integer DEFAULT 20000)
RETURNS json
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    IF p_hours IS NULL OR p_hours < 1 OR p_hours > 168 THEN
        RAISE EXCEPTION 'hours must be between 1 and 168 (got %)', coalesce(p_hours::text, 'null')
            USING ERRCODE = '22023';
    END IF;
    -- end just after now(): a fix stamped exactly now is still in the window
    RETURN reporting.fn_vehicle_track_range(p_vehicle_number,
        now() - make_interval(hours => p_hours), now() + interval '1 microsecond',
        p_max_points);
END
$$;

-- ── Trips for the map ─────────────────────────────────────────────────────────────────────
-- The trips map's window [t0, t1), as the map and its tiles check it (22023): end not before
-- start, at most 366 days. The message shows the caller's text when given (p_start_given /
-- p_end_given, e.g. a date-only end), else the computed bounds.
CREATE OR REPLACE FUNCTION reporting.check_trip_window(
    t0 timestamptz, t1 timestamptz,
    p_start_given text DEFAULT NULL, p_end_given text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET TimeZone = 'UTC'
AS $$
BEGIN
    IF t1 < t0 THEN
        RAISE EXCEPTION 'end (%) is before start (%)', coalesce(p_end_given, t1::text),
            coalesce(p_start_given, t0::text) USING ERRCODE = '22023';
    END IF;
    IF t1 - t0 > interval '366 days' THEN
        RAISE EXCEPTION 'the date range is limited to 366 days (got % days)',
            ceil(extract(epoch FROM t1 - t0) / 86400) USING ERRCODE = '22023';
    END IF;
    RETURN true;
END
$$;

-- The trips map's `vehicles` filter as the map, its tiles and their bounds read it: `raw`
-- the given values trimmed, blanks dropped, distinct (NULL when none), `plates` the same
-- normalized (reporting.normalize_plate). A trip matches when
-- `plate_norm = ANY(plates) OR imei = ANY(raw)`. Unknown values are the caller's to refuse
-- (reporting.check_filters with `raw`).
CREATE OR REPLACE FUNCTION reporting.trip_vehicles(
    p_vehicles text[], OUT raw text[], OUT plates text[])
LANGUAGE sql STABLE
AS $$
    SELECT r.v, (SELECT array_agg(DISTINCT reporting.normalize_plate(x)) FROM unnest(r.v) x)
    FROM (SELECT array_agg(DISTINCT btrim(v)) AS v FROM unnest(p_vehicles) v
          WHERE reporting.filter_value(v) IS NOT NULL) r
$$;

-- Trips of reporting.v_trips starting in [start, end) (default: the 7 days before end; end
-- defaults to now), filtered by vehicles (plates in any spelling, or IMEIs), driver, cost
-- centre and city (case-insensitive). Each trip is a LineString start → end (a Point when the
-- end is unknown). At most `p_limit` features (the newest); the summary always covers every
-- matching trip and says whether the features were capped. `p_with_filters` adds the filter
-- options (what POST /webhook/fleet-dashboard returns).
--
-- fn_trips_for_map_text does the work and returns the GeoJSON as text: a week of a large
-- fleet is ~50,000 features / 25 MB, and assembling the features with format() is ~40 %
-- faster than json_build_object, and skipping the text → json re-parse saves another ~25 %
-- (docs/performance.md). The API calls the _text variant; fn_trips_for_map returns json for
-- SQL users. Keys and values are escaped by to_json(); numbers are printed by PostgreSQL.
-- The window spans at most 366 days. summary.start / summary.end echo the caller's text
-- (p_start_given / p_end_given, e.g. a date-only end '2026-11-10') when given, else the
-- computed bounds; summary.window is the half-open [start, end) actually used.
--
-- Pages (issue #19: no silent truncation): the trips are taken newest first, (start_time,
-- trip_id) DESC — the same order that picks the newest `p_limit` when capped. When more
-- trips follow, `next_cursor` (top level) is the opaque keyset position of the oldest trip
-- returned (reporting.list_cursor('m', start_time, trip_id), R__reporting_lists.sql); passed
-- back (p_after_time / p_after_id, decoded by dashboard/params.py) it gives the next
-- `p_limit` older trips. Each page's features are in ascending order like the first; every
-- trip of the window comes exactly once over the pages (ids are unique). The summary is the
-- whole window's on every page; summary.returned is this answer's feature count and
-- summary.capped says that more trips follow (next_cursor is then set, except with
-- p_limit 0: a summary-only answer).
CREATE OR REPLACE FUNCTION reporting.fn_trips_for_map_text(
    p_vehicles text[] DEFAULT NULL, p_driver text DEFAULT NULL,
    p_cost_centre text DEFAULT NULL, p_city text DEFAULT NULL,
    p_start timestamptz DEFAULT NULL, p_end timestamptz DEFAULT NULL,
    p_limit integer DEFAULT 50000, p_with_filters boolean DEFAULT false,
    p_start_given text DEFAULT NULL, p_end_given text DEFAULT NULL,
    p_after_time timestamptz DEFAULT NULL, p_after_id bigint DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
SET TimeZone = 'UTC'
SET work_mem = '64MB'
AS $$
DECLARE
    t1        timestamptz := coalesce(p_end, now());
    t0        timestamptz := coalesce(p_start, coalesce(p_end, now()) - interval '7 days');
    v_driver  text := reporting.filter_value(p_driver);
    v_cc      text := reporting.filter_value(p_cost_centre);
    v_city    text := reporting.filter_value(p_city);
    v_raw     text[];
    v_plates  text[];
    v_cond    text := '';
    v_rest    text := 'count(*)';  -- the trips at or after the cursor position
    v_after   text := '';
    v_n       bigint;
    v_next    text;
    features  text;
    summary   json;
BEGIN
    PERFORM reporting.check_trip_window(t0, t1, p_start_given, p_end_given);
    IF p_limit IS NULL OR p_limit < 0 THEN
        RAISE EXCEPTION 'limit must be 0 or more' USING ERRCODE = '22023';
    END IF;
    IF (p_after_time IS NULL) <> (p_after_id IS NULL) THEN
        RAISE EXCEPTION 'a cursor needs both its time and its trip id' USING ERRCODE = '22023';
    END IF;
    IF p_after_time IS NOT NULL THEN
        -- the second condition lets the (start_time) index bound the scan
        v_after := ' AND (t.start_time, t.trip_id) < ($12, $13) AND t.start_time <= $12';
        v_rest := 'count(*) FILTER (WHERE (t.start_time, t.trip_id) < ($12, $13))';
    END IF;
    SELECT f.raw, f.plates INTO v_raw, v_plates FROM reporting.trip_vehicles(p_vehicles) f;
    PERFORM reporting.check_filters(v_cc, v_driver, v_city, v_raw, 'vehicles');
    IF v_raw IS NOT NULL THEN
        v_cond := v_cond || ' AND (t.plate_norm = ANY($3) OR t.imei = ANY($4))';
    END IF;
    IF v_driver IS NOT NULL THEN
        v_cond := v_cond || ' AND lower(t.driver_name) = lower($5)';
    END IF;
    IF v_cc IS NOT NULL THEN
        v_cond := v_cond || ' AND lower(t.cost_centre) = lower($6)';
    END IF;
    IF v_city IS NOT NULL THEN
        v_cond := v_cond || ' AND lower(t.city) = lower($7)';
    END IF;

    -- Dynamic SQL so each call is planned for the filters actually given (index on
    -- (lower(cost_centre), start_time) / (plate_norm, start_time) / start_time).
    EXECUTE format($q$
        SELECT %2$s, json_build_object(
            'trips', count(*), 'vehicles', count(DISTINCT t.imei),
            'drivers', count(DISTINCT t.driver_name),
            'distance_km', coalesce(sum(t.distance_km), 0),
            'driving_time_s', coalesce(sum(t.driving_time_s), 0),
            'driving_hours', round(coalesce(sum(t.driving_time_s), 0) / 3600.0, 2),
            'avg_speed_kmh', round(sum(t.distance_km) / nullif(sum(t.driving_time_s), 0) * 3600, 1),
            'max_speed_kmh', max(t.max_speed_kmh),
            'returned', least(%2$s, $8), 'capped', %2$s > $8, 'cap', $8,
            'start', coalesce(to_json($10::text), to_json($1)),
            'end', coalesce(to_json($11::text), to_json($2)),
            'window', json_build_object('start', $1, 'end', $2),
            'filters', json_build_object('vehicles', $9, 'driver', $5,
                                         'cost_centre', $6, 'city', $7),
            'data_as_of', (SELECT max(r.finished_at) FROM reporting.refresh_log r
                           WHERE r.object_name = 'reporting.v_trips' AND r.ok),
            'generated_at', now())
        FROM reporting.v_trips t
        WHERE t.start_time >= $1 AND t.start_time < $2 %1$s
    $q$, v_cond, v_rest)
    INTO v_n, summary
    USING t0, t1, v_plates, v_raw, v_driver, v_cc, v_city, p_limit, v_raw,
          p_start_given, p_end_given, p_after_time, p_after_id;

    -- v_n: the trips at or after the cursor. When more than p_limit, the page is the newest
    -- p_limit of them and f is read twice (features, cursor), so PostgreSQL materializes it;
    -- otherwise f is inlined and the query is the uncapped one of before.
    EXECUTE format($q$
        WITH f AS (SELECT * FROM reporting.v_trips t
                   WHERE t.start_time >= $1 AND t.start_time < $2 %s %s
                   %s)
        SELECT (SELECT '[' || string_agg(format(
            '{"type":"Feature","id":%%s,"geometry":%%s,"properties":{"trip_id":%%s,'
            '"imei":%%s,"vehicle_number":%%s,"vehicle_name":%%s,"driver_name":%%s,'
            '"cost_centre":%%s,"city":%%s,"vehicle_type":%%s,"start_time":%%s,'
            '"end_time":%%s,"distance_km":%%s,"driving_time_s":%%s,"duration_s":%%s,'
            '"avg_speed_kmh":%%s,"max_speed_kmh":%%s}}',
            f.trip_id,
            CASE
                WHEN f.start_lat IS NULL OR f.start_lng IS NULL THEN 'null'
                WHEN f.end_lat IS NULL OR f.end_lng IS NULL THEN format(
                    '{"type":"Point","coordinates":[%%s,%%s]}', f.start_lng, f.start_lat)
                ELSE format('{"type":"LineString","coordinates":[[%%s,%%s],[%%s,%%s]]}',
                            f.start_lng, f.start_lat, f.end_lng, f.end_lat)
            END,
            f.trip_id, to_json(f.imei),
            coalesce(to_json(f.vehicle_number)::text, 'null'),
            coalesce(to_json(f.vehicle_name)::text, 'null'),
            coalesce(to_json(f.driver_name)::text, 'null'),
            coalesce(to_json(f.cost_centre)::text, 'null'),
            coalesce(to_json(f.city)::text, 'null'),
            coalesce(to_json(f.vehicle_type)::text, 'null'),
            to_json(f.start_time), coalesce(to_json(f.end_time)::text, 'null'),
            coalesce(f.distance_km::text, 'null'), coalesce(f.driving_time_s::text, 'null'),
            coalesce(f.duration_s::text, 'null'), coalesce(f.avg_speed_kmh::text, 'null'),
            coalesce(f.max_speed_kmh::text, 'null')),
            ',' ORDER BY f.start_time, f.trip_id) || ']' FROM f),
            %s
    $q$, v_cond, v_after,
       CASE WHEN v_n > p_limit THEN 'ORDER BY t.start_time DESC, t.trip_id DESC LIMIT $8' END,
       CASE WHEN v_n > p_limit
            THEN '(SELECT reporting.list_cursor(''m'', c.start_time, c.trip_id) FROM f c'
                 ' ORDER BY c.start_time, c.trip_id LIMIT 1)'
            ELSE 'NULL::text' END)
    INTO features, v_next
    USING t0, t1, v_plates, v_raw, v_driver, v_cc, v_city, p_limit, v_raw,
          p_start_given, p_end_given, p_after_time, p_after_id;

    RETURN '{"type":"FeatureCollection","features":' || coalesce(features, '[]')
        || ',"summary":' || summary::text
        || ',"next_cursor":' || coalesce(to_json(v_next)::text, 'null')
        || CASE WHEN p_with_filters
                THEN ',"filters":' || reporting.fn_filter_options()::text ELSE '' END
        || '}';
END
$$;

CREATE OR REPLACE FUNCTION reporting.fn_trips_for_map(
    p_vehicles text[] DEFAULT NULL, p_driver text DEFAULT NULL,
    p_cost_centre text DEFAULT NULL, p_city text DEFAULT NULL,
    p_start timestamptz DEFAULT NULL, p_end timestamptz DEFAULT NULL,
    p_limit integer DEFAULT 50000, p_with_filters boolean DEFAULT false)
RETURNS json
LANGUAGE sql STABLE
RETURN reporting.fn_trips_for_map_text(p_vehicles, p_driver, p_cost_centre, p_city,
                                       p_start, p_end, p_limit, p_with_filters)::json;

-- ── Analytics answers for FleetOps ─────────────────────────────────────────────────────────

-- Check an inclusive EAT date range of the analytics endpoints.
CREATE OR REPLACE FUNCTION reporting.check_day_range(p_from date, p_to date)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF p_from IS NULL OR p_to IS NULL THEN
        RAISE EXCEPTION 'start and end dates are required' USING ERRCODE = '22023';
    END IF;
    IF p_to < p_from THEN
        RAISE EXCEPTION 'end (%) is before start (%)', p_to, p_from USING ERRCODE = '22023';
    END IF;
    IF p_to - p_from + 1 > 366 THEN
        RAISE EXCEPTION 'the date range is limited to 366 days (got % days)', p_to - p_from + 1
            USING ERRCODE = '22023';
    END IF;
END
$$;

-- Fleet KPIs of today (EAT): live status, today's totals, per cost centre, 14-day distance
-- trend, alarms by class and severity (events such as ignition apart), vehicles not moved today, vehicles idling now.
CREATE OR REPLACE FUNCTION reporting.fn_fleet_summary(p_cost_centre text DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
SET TimeZone = 'UTC'
AS $$
DECLARE
    result json;
BEGIN
    PERFORM reporting.check_filters(p_cost_centre);
    WITH cc AS (SELECT reporting.filter_value(p_cost_centre) AS v),
    today AS (
        SELECT ft.* FROM tracksolid.v_fleet_today ft, cc
        WHERE cc.v IS NULL OR lower(ft.cost_centre) = lower(cc.v)
    ),
    day_alarms AS (
        SELECT a.* FROM tracksolid.fn_alarms_daily(reporting.local_day(now()),
                                                   reporting.local_day(now())) a, cc
        WHERE cc.v IS NULL OR lower(a.cost_centre) = lower(cc.v)
    )
    SELECT json_build_object(
        'date', reporting.local_day(now()),
        'cost_centre', (SELECT v FROM cc),
        'status', (SELECT json_build_object(
                'vehicles', count(*),
                'moving', count(*) FILTER (WHERE status = 'moving'),
                'idle', count(*) FILTER (WHERE status = 'idle'),
                'parked', count(*) FILTER (WHERE status = 'parked'),
                'offline', count(*) FILTER (WHERE status = 'offline'),
                'no_fix', count(*) FILTER (WHERE status = 'no_fix')) FROM today),
        'today', (SELECT json_build_object(
                'trips', coalesce(sum(trips_today), 0),
                'distance_km', coalesce(sum(km_today), 0),
                'driving_time_s', coalesce(sum(driving_time_s_today), 0),
                'idle_s', coalesce(sum(idle_s_today), 0),
                'alarms', coalesce(sum(alarms_today), 0),
                'events', coalesce(sum(events_today), 0),
                'vehicles_moved', count(*) FILTER (WHERE trips_today > 0),
                'vehicles_not_moved', count(*) FILTER (WHERE trips_today = 0)) FROM today),
        'by_cost_centre', (SELECT coalesce(json_agg(x ORDER BY x.cost_centre NULLS LAST), '[]')
            FROM (SELECT cost_centre, count(*) AS vehicles,
                         count(*) FILTER (WHERE status = 'moving') AS moving,
                         count(*) FILTER (WHERE status = 'idle') AS idle,
                         count(*) FILTER (WHERE status = 'parked') AS parked,
                         count(*) FILTER (WHERE status IN ('offline', 'no_fix')) AS offline,
                         sum(trips_today) AS trips_today, sum(km_today) AS km_today
                  FROM today GROUP BY cost_centre) x),
        'km_last_14_days', (SELECT coalesce(json_agg(x ORDER BY x.day), '[]')
            FROM (SELECT k.day, sum(k.trips) AS trips, sum(k.distance_km) AS distance_km,
                         sum(k.vehicles) AS vehicles
                  FROM tracksolid.fn_fleet_km_daily(reporting.local_day(now()) - 13,
                                                    reporting.local_day(now())) k, cc
                  WHERE cc.v IS NULL OR lower(k.cost_centre) = lower(cc.v)
                  GROUP BY k.day) x),
        -- alarms vs events: tracksolid.alarm_types (0106); unknown types are alarms / medium
        'alarms_today', (SELECT coalesce(json_agg(x ORDER BY x.alarms DESC), '[]')
            FROM (SELECT a.category, sum(a.alarms) AS alarms FROM day_alarms a
                  WHERE a.kind = 'alarm' GROUP BY a.category) x),
        'alarms_by_severity', (SELECT json_object_agg(s.severity, coalesce(n.alarms, 0)
                                                      ORDER BY s.rank)
            FROM unnest(ARRAY['critical', 'high', 'medium', 'low', 'info'])
                     WITH ORDINALITY AS s(severity, rank)
            LEFT JOIN (SELECT a.severity, sum(a.alarms) AS alarms FROM day_alarms a
                       WHERE a.kind = 'alarm' GROUP BY a.severity) n USING (severity)),
        'events_today', (SELECT coalesce(json_agg(x ORDER BY x.events DESC, x.alarm_type), '[]')
            FROM (SELECT a.alarm_type, max(a.alarm_name) AS name, sum(a.alarms) AS events
                  FROM day_alarms a WHERE a.kind = 'event' GROUP BY a.alarm_type) x),
        'not_moved_today', (SELECT coalesce(json_agg(x ORDER BY x.vehicle_number), '[]')
            FROM (SELECT n.imei, n.vehicle_number, n.driver_name, n.cost_centre, n.status,
                         n.last_fix, n.last_trip_end, n.days_since_last_trip
                  FROM tracksolid.v_vehicles_not_moved_today n, cc
                  WHERE cc.v IS NULL OR lower(n.cost_centre) = lower(cc.v)
                  ORDER BY n.vehicle_number LIMIT 1000) x),
        'currently_idle', (SELECT coalesce(json_agg(x ORDER BY x.idle_s DESC), '[]')
            FROM (SELECT i.imei, i.vehicle_number, i.driver_name, i.cost_centre, i.lat, i.lng,
                         i.idle_since, i.idle_s
                  FROM tracksolid.v_currently_idle i, cc
                  WHERE cc.v IS NULL OR lower(i.cost_centre) = lower(cc.v)
                  ORDER BY i.idle_s DESC LIMIT 1000) x),
        'generated_at', now())
    INTO result;
    RETURN result;
END
$$;

-- Utilisation per vehicle and per day over an inclusive EAT date range.
CREATE OR REPLACE FUNCTION reporting.fn_utilisation(
    p_from date, p_to date, p_cost_centre text DEFAULT NULL, p_vehicle text DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
SET TimeZone = 'UTC'
AS $$
DECLARE
    cc     text := reporting.filter_value(p_cost_centre);
    veh    text := reporting.filter_value(p_vehicle);
    result json;
BEGIN
    PERFORM reporting.check_day_range(p_from, p_to);
    PERFORM reporting.check_filters(cc, p_vehicles => ARRAY[veh]);
    WITH u AS MATERIALIZED (
        SELECT u.* FROM tracksolid.fn_utilisation_daily(p_from, p_to) u
        LEFT JOIN tracksolid.devices d ON d.imei = u.imei
        WHERE (cc IS NULL OR lower(u.cost_centre) = lower(cc))
          AND (veh IS NULL OR d.plate_norm = reporting.normalize_plate(veh) OR u.imei = veh)
    )
    SELECT json_build_object(
        'start', p_from, 'end', p_to, 'cost_centre', cc, 'vehicle', veh,
        'definitions', json_build_object(
            'driving_s', 'driving time of the trips started that day',
            'idle_s', 'ignition on, not moving (idling stops)',
            'parked_s', 'the rest of the day (today: of the time elapsed so far)',
            'utilisation_pct', 'driving_s / period_s',
            'idle_pct', 'idle_s / (driving_s + idle_s)'),
        'totals', (SELECT json_build_object(
                'vehicles', count(DISTINCT imei), 'period_s', coalesce(sum(period_s), 0),
                'driving_s', coalesce(sum(driving_s), 0), 'idle_s', coalesce(sum(idle_s), 0),
                'parked_s', coalesce(sum(parked_s), 0),
                'utilisation_pct', round(100.0 * sum(driving_s) / nullif(sum(period_s), 0), 1),
                'idle_pct', round(100.0 * sum(idle_s) / nullif(sum(driving_s + idle_s), 0), 1))
            FROM u),
        'vehicles', (SELECT coalesce(json_agg(x ORDER BY x.utilisation_pct DESC NULLS LAST,
                                                         x.vehicle_number), '[]')
            FROM (SELECT imei, vehicle_number, driver_name, cost_centre, city, vehicle_type,
                         count(*) AS days, sum(period_s) AS period_s, sum(driving_s) AS driving_s,
                         sum(idle_s) AS idle_s, sum(parked_s) AS parked_s,
                         round(100.0 * sum(driving_s) / nullif(sum(period_s), 0), 1)
                             AS utilisation_pct,
                         round(100.0 * sum(idle_s) / nullif(sum(driving_s + idle_s), 0), 1)
                             AS idle_pct
                  FROM u GROUP BY imei, vehicle_number, driver_name, cost_centre, city,
                                  vehicle_type) x),
        'daily', (SELECT coalesce(json_agg(x ORDER BY x.day), '[]')
            FROM (SELECT day, count(*) AS vehicles, sum(driving_s) AS driving_s,
                         sum(idle_s) AS idle_s, sum(parked_s) AS parked_s,
                         round(100.0 * sum(driving_s) / nullif(sum(period_s), 0), 1)
                             AS utilisation_pct
                  FROM u GROUP BY day) x),
        'generated_at', now())
    INTO result;
    RETURN result;
END
$$;

-- Driver behaviour over an inclusive EAT date range: per driver/vehicle totals and the
-- aggression index (harsh acceleration + harsh braking + overspeed alarms per 100 km; NULL
-- below 1 km), worst first; plus the driver clock (first ignition-on, last stop) of `end`.
CREATE OR REPLACE FUNCTION reporting.fn_driver_behaviour(
    p_from date, p_to date, p_cost_centre text DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
SET TimeZone = 'UTC'
AS $$
DECLARE
    cc     text := reporting.filter_value(p_cost_centre);
    result json;
BEGIN
    PERFORM reporting.check_day_range(p_from, p_to);
    PERFORM reporting.check_filters(cc);
    WITH a AS MATERIALIZED (
        SELECT * FROM tracksolid.fn_driver_aggregates_daily(p_from, p_to) a
        WHERE cc IS NULL OR lower(a.cost_centre) = lower(cc)
    ), per AS (
        SELECT imei, vehicle_number, driver_name, cost_centre, city,
               count(*) FILTER (WHERE trips > 0) AS days_driven, sum(trips) AS trips,
               sum(distance_km) AS distance_km, sum(driving_time_s) AS driving_time_s,
               max(max_speed_kmh) AS max_speed_kmh,
               sum(harsh_acceleration) AS harsh_acceleration,
               sum(harsh_braking) AS harsh_braking, sum(overspeed) AS overspeed,
               CASE WHEN sum(distance_km) >= 1
                    THEN round((sum(harsh_acceleration) + sum(harsh_braking) + sum(overspeed))
                               * 100 / sum(distance_km), 2) END AS aggression_index
        FROM a GROUP BY imei, vehicle_number, driver_name, cost_centre, city
    )
    SELECT json_build_object(
        'start', p_from, 'end', p_to, 'cost_centre', cc,
        'definitions', json_build_object(
            'aggression_index',
            '(harsh_acceleration + harsh_braking + overspeed alarms) per 100 km; null below 1 km'),
        'totals', (SELECT json_build_object(
                'drivers', count(*), 'trips', coalesce(sum(trips), 0),
                'distance_km', coalesce(sum(distance_km), 0),
                'harsh_acceleration', coalesce(sum(harsh_acceleration), 0),
                'harsh_braking', coalesce(sum(harsh_braking), 0),
                'overspeed', coalesce(sum(overspeed), 0),
                'aggression_index', CASE WHEN sum(distance_km) >= 1 THEN round(
                    (sum(harsh_acceleration) + sum(harsh_braking) + sum(overspeed)) * 100
                    / sum(distance_km), 2) END)
            FROM per),
        'drivers', (SELECT coalesce(json_agg(p ORDER BY p.aggression_index DESC NULLS LAST,
                                                        p.vehicle_number), '[]') FROM per p),
        'daily', (SELECT coalesce(json_agg(x ORDER BY x.day), '[]')
            FROM (SELECT day, sum(trips) AS trips, sum(distance_km) AS distance_km,
                         sum(harsh_acceleration) AS harsh_acceleration,
                         sum(harsh_braking) AS harsh_braking, sum(overspeed) AS overspeed
                  FROM a GROUP BY day) x),
        'clock', (SELECT coalesce(json_agg(c ORDER BY c.first_ignition_on), '[]')
            FROM (SELECT k.day, k.imei, k.vehicle_number, k.driver_name, k.cost_centre,
                         k.first_ignition_on, k.last_stop, k.trips, k.on_duty_s
                  FROM tracksolid.fn_driver_clock_daily(p_to, p_to) k
                  WHERE cc IS NULL OR lower(k.cost_centre) = lower(cc)) c),
        'generated_at', now())
    INTO result;
    RETURN result;
END
$$;

-- reporting.fn_ingest_health() (GET /health/ingest) lives in R__health.sql (issue #18).

-- The definer functions are for the roles the runner grants (dashboard_ro, the owner role),
-- not for everyone.
REVOKE EXECUTE ON FUNCTION reporting.fn_live_positions(text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION reporting.fn_vehicle_track(text, integer, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION reporting.fn_vehicle_track_range(text, timestamptz, timestamptz, integer)
    FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION reporting.fn_trips_for_map(text[], text, text, text, timestamptz,
                                                      timestamptz, integer, boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION reporting.fn_trips_for_map_text(text[], text, text, text, timestamptz,
                                                           timestamptz, integer, boolean, text,
                                                           text, timestamptz, bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION reporting.check_filters(text, text, text, text[], text, boolean)
    FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION reporting.fn_filter_options() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION reporting.fn_fleet_summary(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION reporting.fn_utilisation(date, date, text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION reporting.fn_driver_behaviour(date, date, text) FROM PUBLIC;
