-- Repeatable · the read-API's lists (issue #18): trips, stops and alarms with keyset paging
-- (GET /analytics/trips, /analytics/stops, /analytics/alarms, dashboard/lists.py) and the
-- row sources of the CSV exports (dashboard/export.py).
--
-- Layers:
-- * reporting.v_trip_list / v_stop_list / v_alarm_list — one row per trip / stop / alarm, read
--   live from tracksolid.* (not the v_trips matview: a list must show the trip the worker
--   stored a minute ago), with the vehicle, cost centre and the driver assigned at the time
--   (tracksolid.driver_assignments, 0105). Views run with their owner's rights, so dashboard_ro
--   needs only SELECT on reporting.
-- * reporting.fn_*_rows(...) — the filtered, ordered rows (newest first) after an optional
--   keyset position. Plain LANGUAGE sql, not SECURITY DEFINER, no SET: PostgreSQL inlines
--   them into the caller's query, so `LIMIT n` stops at n rows of the time index and a CSV
--   export's server-side cursor streams the view instead of materialising the window.
--   Their columns are the answer's: the JSON items are to_json(row), the CSV header is the
--   column list.
-- * reporting.fn_*_page(...) — the JSON page {"items", "next_cursor", "count"}: checks the
--   window and the filters (SQLSTATE 22023 → HTTP 422), reads limit + 1 rows and builds the
--   next cursor from the last row of the page when there is more.
--
-- The cursor is opaque to callers: base64url (no padding) of the JSON array
-- [kind, time, id] — kind 't' | 's' | 'a', the ISO-8601 time and id of the page's last row.
-- dashboard/params.py parse_cursor decodes and checks it (a cursor of another list is 422).
-- Order is (time DESC, id DESC); ids are unique, so paging returns every row exactly once
-- even when rows share a time.

DROP FUNCTION IF EXISTS reporting.fn_trips_page(text, text, timestamptz, timestamptz, integer,
                                                timestamptz, bigint);
DROP FUNCTION IF EXISTS reporting.fn_stops_page(text, text, timestamptz, timestamptz, integer,
                                                timestamptz, text);
DROP FUNCTION IF EXISTS reporting.fn_alarms_page(text, text, text[], text[], boolean,
                                                 timestamptz, timestamptz, integer,
                                                 timestamptz, bigint);
DROP FUNCTION IF EXISTS reporting.fn_trip_rows(text, text, timestamptz, timestamptz,
                                               timestamptz, bigint);
DROP FUNCTION IF EXISTS reporting.fn_stop_rows(text, text, timestamptz, timestamptz,
                                               timestamptz, text);
DROP FUNCTION IF EXISTS reporting.fn_alarm_rows(text, text, text[], text[], boolean,
                                                timestamptz, timestamptz, timestamptz, bigint);
DROP VIEW IF EXISTS reporting.v_trip_list;
DROP VIEW IF EXISTS reporting.v_stop_list;
DROP VIEW IF EXISTS reporting.v_alarm_list;

-- The ignition events hidden from the alarm list unless include_ignition=true: ACC on/off as
-- the platform (ACC_ON / ACC_OFF) and the device (197 / 198) send them (0106: kind 'event',
-- note 'ignition'). A function so the list and any later reader agree.
CREATE OR REPLACE FUNCTION reporting.ignition_alarm_types()
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ARRAY['ACC_ON', 'ACC_OFF', '197', '198'];

-- The opaque keyset cursor (see the header): base64url of [kind, time, id], no padding.
CREATE OR REPLACE FUNCTION reporting.list_cursor(p_kind text, p_time timestamptz, p_id anyelement)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
SET TimeZone = 'UTC'
AS $$
    SELECT rtrim(translate(encode(convert_to(
               json_build_array(p_kind, p_time, p_id)::text, 'UTF8'), 'base64'),
           E'+/\n', '-_'), '=')
$$;

-- A list window: both ends, end after start, at most 366 days.
CREATE OR REPLACE FUNCTION reporting.check_list_window(p_start timestamptz, p_end timestamptz)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF p_start IS NULL OR p_end IS NULL THEN
        RAISE EXCEPTION 'start and end are required' USING ERRCODE = '22023';
    END IF;
    IF p_end <= p_start THEN
        RAISE EXCEPTION 'end must be after start' USING ERRCODE = '22023';
    END IF;
    IF p_end - p_start > interval '366 days' THEN
        RAISE EXCEPTION 'the date range is limited to 366 days (got % days)',
            ceil(extract(epoch FROM p_end - p_start) / 86400) USING ERRCODE = '22023';
    END IF;
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION reporting.check_list_limit(p_limit integer)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF p_limit IS NULL OR p_limit < 1 OR p_limit > 5000 THEN
        RAISE EXCEPTION 'limit must be between 1 and 5000 (got %)', coalesce(p_limit::text, 'null')
            USING ERRCODE = '22023';
    END IF;
    RETURN true;
END
$$;

-- ── Views ────────────────────────────────────────────────────────────────────────────────
CREATE VIEW reporting.v_trip_list AS
SELECT t.trip_id, t.imei,
       coalesce(nullif(d.vehicle_number, ''), nullif(d.vehicle_name, ''), t.imei) AS vehicle_number,
       da.driver_name AS driver,
       t.start_time, t.end_time,
       CASE WHEN t.end_time IS NOT NULL
            THEN extract(epoch FROM t.end_time - t.start_time)::integer END AS duration_s,
       t.distance_km, t.avg_speed_kmh, t.max_speed_kmh, t.source,
       t.start_lat, t.start_lng, t.end_lat, t.end_lng,
       d.plate_norm, d.cost_centre
FROM tracksolid.trips t
LEFT JOIN tracksolid.devices d ON d.imei = t.imei
LEFT JOIN LATERAL (
    SELECT a.driver_name FROM tracksolid.driver_assignments a
    WHERE a.imei = t.imei AND a.valid_from <= t.start_time
      AND (a.valid_to IS NULL OR a.valid_to > t.start_time)
    ORDER BY a.valid_from DESC LIMIT 1
) da ON true;

COMMENT ON VIEW reporting.v_trip_list IS
    'Trips read live (GET /analytics/trips): vehicle, driver at the start, cost centre.';

-- stop_id: the natural key (imei, start time in µs since the epoch, p = parked / i = idling).
CREATE VIEW reporting.v_stop_list AS
SELECT p.imei || ':' || (extract(epoch FROM p.start_time) * 1000000)::bigint
           || ':' || CASE WHEN p.acc_on THEN 'i' ELSE 'p' END AS stop_id,
       p.imei,
       coalesce(nullif(d.vehicle_number, ''), nullif(d.vehicle_name, ''), p.imei) AS vehicle_number,
       CASE WHEN p.acc_on THEN 'idling' ELSE 'parked' END AS kind,
       p.start_time, p.end_time,
       coalesce(p.duration_s, CASE WHEN p.end_time IS NOT NULL
                   THEN extract(epoch FROM p.end_time - p.start_time)::integer END) AS duration_s,
       p.lat, p.lng, p.address,
       d.plate_norm, d.cost_centre
FROM tracksolid.parking_events p
LEFT JOIN tracksolid.devices d ON d.imei = p.imei;

COMMENT ON VIEW reporting.v_stop_list IS
    'Stops (parked / idling) read live (GET /analytics/stops); stop_id = imei:start_us:p|i.';

-- Severity and kind from tracksolid.alarm_types (0106); an unknown type is alarm / medium.
CREATE VIEW reporting.v_alarm_list AS
SELECT a.alarm_id, a.imei,
       coalesce(nullif(d.vehicle_number, ''), nullif(d.vehicle_name, ''), a.imei) AS vehicle_number,
       da.driver_name AS driver,
       a.alarm_type,
       coalesce(nullif(btrim(a.alarm_name), ''), t.name, a.alarm_type) AS alarm_name,
       coalesce(t.kind, 'alarm') AS kind,
       coalesce(t.severity, 'medium') AS severity,
       a.alarm_time, a.lat, a.lng,
       nullif(coalesce(a.raw ->> 'address', a.raw ->> 'locDesc', a.raw ->> 'loc_desc'), '')
           AS address,
       d.plate_norm, d.cost_centre
FROM tracksolid.alarms a
LEFT JOIN tracksolid.devices d ON d.imei = a.imei
LEFT JOIN tracksolid.alarm_types t ON t.alarm_type = a.alarm_type
LEFT JOIN LATERAL (
    SELECT x.driver_name FROM tracksolid.driver_assignments x
    WHERE x.imei = a.imei AND x.valid_from <= a.alarm_time
      AND (x.valid_to IS NULL OR x.valid_to > a.alarm_time)
    ORDER BY x.valid_from DESC LIMIT 1
) da ON true;

COMMENT ON VIEW reporting.v_alarm_list IS
    'Alarms and events read live (GET /analytics/alarms) with kind / severity (alarm_types).';

-- ── Row sources (inlined into the caller's query) ──────────────────────────────────────────
-- p_vehicle: a plate in any spelling or an IMEI; p_cost_centre case-insensitive; NULL = all.
-- The window is [p_start, p_end); the keyset position (p_after_time, p_after_id) excludes
-- the rows up to and including the previous page's last row.

CREATE FUNCTION reporting.fn_trip_rows(
    p_vehicle text, p_cost_centre text, p_start timestamptz, p_end timestamptz,
    p_after_time timestamptz DEFAULT NULL, p_after_id bigint DEFAULT NULL)
RETURNS TABLE (
    trip_id bigint, imei text, vehicle_number text, driver text, start_time timestamptz,
    end_time timestamptz, duration_s integer, distance_km numeric, avg_speed_kmh real,
    max_speed_kmh real, source text, start_lat double precision, start_lng double precision,
    end_lat double precision, end_lng double precision)
LANGUAGE sql STABLE
AS $$
    SELECT t.trip_id, t.imei, t.vehicle_number, t.driver, t.start_time, t.end_time,
           t.duration_s, t.distance_km, t.avg_speed_kmh, t.max_speed_kmh, t.source,
           t.start_lat, t.start_lng, t.end_lat, t.end_lng
    FROM reporting.v_trip_list t
    WHERE t.start_time >= p_start AND t.start_time < p_end
      AND (p_vehicle IS NULL OR t.plate_norm = reporting.normalize_plate(p_vehicle)
           OR t.imei = p_vehicle)
      AND (p_cost_centre IS NULL OR lower(t.cost_centre) = lower(p_cost_centre))
      AND (p_after_time IS NULL OR (t.start_time, t.trip_id) < (p_after_time, p_after_id))
      AND (p_after_time IS NULL OR t.start_time <= p_after_time)  -- for the time index
    ORDER BY t.start_time DESC, t.trip_id DESC
$$;

CREATE FUNCTION reporting.fn_stop_rows(
    p_vehicle text, p_cost_centre text, p_start timestamptz, p_end timestamptz,
    p_after_time timestamptz DEFAULT NULL, p_after_id text DEFAULT NULL)
RETURNS TABLE (
    stop_id text, imei text, vehicle_number text, kind text, start_time timestamptz,
    end_time timestamptz, duration_s integer, lat double precision, lng double precision,
    address text)
LANGUAGE sql STABLE
AS $$
    SELECT s.stop_id, s.imei, s.vehicle_number, s.kind, s.start_time, s.end_time,
           s.duration_s, s.lat, s.lng, s.address
    FROM reporting.v_stop_list s
    WHERE s.start_time >= p_start AND s.start_time < p_end
      AND (p_vehicle IS NULL OR s.plate_norm = reporting.normalize_plate(p_vehicle)
           OR s.imei = p_vehicle)
      AND (p_cost_centre IS NULL OR lower(s.cost_centre) = lower(p_cost_centre))
      AND (p_after_time IS NULL OR (s.start_time, s.stop_id) < (p_after_time, p_after_id))
      AND (p_after_time IS NULL OR s.start_time <= p_after_time)  -- for the time index
    ORDER BY s.start_time DESC, s.stop_id DESC
$$;

-- p_types: exact alarm_type values (NULL = all); p_severities: critical | high | medium |
-- low | info (NULL = all); ignition events only with p_include_ignition.
CREATE FUNCTION reporting.fn_alarm_rows(
    p_vehicle text, p_cost_centre text, p_types text[], p_severities text[],
    p_include_ignition boolean, p_start timestamptz, p_end timestamptz,
    p_after_time timestamptz DEFAULT NULL, p_after_id bigint DEFAULT NULL)
RETURNS TABLE (
    alarm_id bigint, imei text, vehicle_number text, driver text, alarm_type text,
    alarm_name text, kind text, severity text, alarm_time timestamptz,
    lat double precision, lng double precision, address text)
LANGUAGE sql STABLE
AS $$
    SELECT a.alarm_id, a.imei, a.vehicle_number, a.driver, a.alarm_type, a.alarm_name,
           a.kind, a.severity, a.alarm_time, a.lat, a.lng, a.address
    FROM reporting.v_alarm_list a
    WHERE a.alarm_time >= p_start AND a.alarm_time < p_end
      AND (p_vehicle IS NULL OR a.plate_norm = reporting.normalize_plate(p_vehicle)
           OR a.imei = p_vehicle)
      AND (p_cost_centre IS NULL OR lower(a.cost_centre) = lower(p_cost_centre))
      AND (p_types IS NULL OR a.alarm_type = ANY (p_types))
      AND (p_severities IS NULL OR a.severity = ANY (p_severities))
      AND (p_include_ignition OR a.alarm_type <> ALL (reporting.ignition_alarm_types()))
      AND (p_after_time IS NULL OR (a.alarm_time, a.alarm_id) < (p_after_time, p_after_id))
      AND (p_after_time IS NULL OR a.alarm_time <= p_after_time)  -- for the time index
    ORDER BY a.alarm_time DESC, a.alarm_id DESC
$$;

-- ── JSON pages ───────────────────────────────────────────────────────────────────────────

CREATE FUNCTION reporting.fn_trips_page(
    p_vehicle text, p_cost_centre text, p_start timestamptz, p_end timestamptz,
    p_limit integer DEFAULT 200, p_after_time timestamptz DEFAULT NULL,
    p_after_id bigint DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql STABLE
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_vehicle text := reporting.filter_value(p_vehicle);
    v_cc      text := reporting.filter_value(p_cost_centre);
    result    json;
BEGIN
    PERFORM reporting.check_list_window(p_start, p_end);
    PERFORM reporting.check_list_limit(p_limit);
    PERFORM reporting.check_filters(v_cc, p_vehicles => ARRAY[v_vehicle]);
    WITH r AS (
        SELECT r.*
        FROM reporting.fn_trip_rows(v_vehicle, v_cc, p_start, p_end, p_after_time, p_after_id) r
        LIMIT p_limit + 1  -- in the rows' order (time DESC, id DESC); one more = a next page
    ), page AS (SELECT * FROM r ORDER BY r.start_time DESC, r.trip_id DESC LIMIT p_limit)
    SELECT json_build_object(
        'items', coalesce((SELECT json_agg(to_json(x) ORDER BY x.start_time DESC, x.trip_id DESC)
                           FROM (SELECT trip_id, imei, vehicle_number, driver, start_time,
                                        end_time, duration_s, distance_km, avg_speed_kmh,
                                        max_speed_kmh, source, start_lat, start_lng, end_lat,
                                        end_lng FROM page) x), '[]'::json),
        'next_cursor', CASE WHEN (SELECT count(*) FROM r) > p_limit THEN
            (SELECT reporting.list_cursor('t', p.start_time, p.trip_id)
             FROM page p ORDER BY p.start_time, p.trip_id LIMIT 1) END,
        'count', (SELECT count(*) FROM page))
    INTO result;
    RETURN result;
END
$$;

CREATE FUNCTION reporting.fn_stops_page(
    p_vehicle text, p_cost_centre text, p_start timestamptz, p_end timestamptz,
    p_limit integer DEFAULT 200, p_after_time timestamptz DEFAULT NULL,
    p_after_id text DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql STABLE
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_vehicle text := reporting.filter_value(p_vehicle);
    v_cc      text := reporting.filter_value(p_cost_centre);
    result    json;
BEGIN
    PERFORM reporting.check_list_window(p_start, p_end);
    PERFORM reporting.check_list_limit(p_limit);
    PERFORM reporting.check_filters(v_cc, p_vehicles => ARRAY[v_vehicle]);
    WITH r AS (
        SELECT r.*
        FROM reporting.fn_stop_rows(v_vehicle, v_cc, p_start, p_end, p_after_time, p_after_id) r
        LIMIT p_limit + 1  -- in the rows' order (time DESC, id DESC); one more = a next page
    ), page AS (SELECT * FROM r ORDER BY r.start_time DESC, r.stop_id DESC LIMIT p_limit)
    SELECT json_build_object(
        'items', coalesce((SELECT json_agg(to_json(x) ORDER BY x.start_time DESC, x.stop_id DESC)
                           FROM (SELECT stop_id, imei, vehicle_number, kind, start_time,
                                        end_time, duration_s, lat, lng, address FROM page) x),
                          '[]'::json),
        'next_cursor', CASE WHEN (SELECT count(*) FROM r) > p_limit THEN
            (SELECT reporting.list_cursor('s', p.start_time, p.stop_id)
             FROM page p ORDER BY p.start_time, p.stop_id LIMIT 1) END,
        'count', (SELECT count(*) FROM page))
    INTO result;
    RETURN result;
END
$$;

CREATE FUNCTION reporting.fn_alarms_page(
    p_vehicle text, p_cost_centre text, p_types text[], p_severities text[],
    p_include_ignition boolean, p_start timestamptz, p_end timestamptz,
    p_limit integer DEFAULT 200, p_after_time timestamptz DEFAULT NULL,
    p_after_id bigint DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql STABLE
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_vehicle text := reporting.filter_value(p_vehicle);
    v_cc      text := reporting.filter_value(p_cost_centre);
    v_bad     text;
    result    json;
BEGIN
    PERFORM reporting.check_list_window(p_start, p_end);
    PERFORM reporting.check_list_limit(p_limit);
    PERFORM reporting.check_filters(v_cc, p_vehicles => ARRAY[v_vehicle]);
    SELECT string_agg(format('"%s"', s), ', ') INTO v_bad FROM unnest(p_severities) s
    WHERE s NOT IN ('critical', 'high', 'medium', 'low', 'info');
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'severity must be critical, high, medium, low or info (got %)', v_bad
            USING ERRCODE = '22023';
    END IF;
    WITH r AS (
        SELECT r.*
        FROM reporting.fn_alarm_rows(v_vehicle, v_cc, p_types, p_severities,
                                     coalesce(p_include_ignition, false), p_start, p_end,
                                     p_after_time, p_after_id) r
        LIMIT p_limit + 1  -- in the rows' order (time DESC, id DESC); one more = a next page
    ), page AS (SELECT * FROM r ORDER BY r.alarm_time DESC, r.alarm_id DESC LIMIT p_limit)
    SELECT json_build_object(
        'items', coalesce((SELECT json_agg(to_json(x) ORDER BY x.alarm_time DESC, x.alarm_id DESC)
                           FROM (SELECT alarm_id, imei, vehicle_number, driver, alarm_type,
                                        alarm_name, kind, severity, alarm_time, lat, lng,
                                        address FROM page) x), '[]'::json),
        'next_cursor', CASE WHEN (SELECT count(*) FROM r) > p_limit THEN
            (SELECT reporting.list_cursor('a', p.alarm_time, p.alarm_id)
             FROM page p ORDER BY p.alarm_time, p.alarm_id LIMIT 1) END,
        'count', (SELECT count(*) FROM page))
    INTO result;
    RETURN result;
END
$$;

-- ── Summary rows for the CSV exports (one row per day and vehicle / driver) ────────────────
-- tracksolid.fn_*_daily read the base tables, so these wrappers are SECURITY DEFINER (the
-- read-only role may not call them directly).

CREATE OR REPLACE FUNCTION reporting.fn_utilisation_rows(
    p_from date, p_to date, p_cost_centre text DEFAULT NULL, p_vehicle text DEFAULT NULL)
RETURNS TABLE (
    day date, imei text, vehicle_number text, driver_name text, cost_centre text, city text,
    vehicle_type text, period_s integer, driving_s integer, idle_s integer, parked_s integer,
    utilisation_pct numeric, idle_pct numeric)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
SET TimeZone = 'UTC'
AS $$
DECLARE
    cc  text := reporting.filter_value(p_cost_centre);
    veh text := reporting.filter_value(p_vehicle);
BEGIN
    PERFORM reporting.check_day_range(p_from, p_to);
    PERFORM reporting.check_filters(cc, p_vehicles => ARRAY[veh]);
    RETURN QUERY
        SELECT u.day, u.imei, u.vehicle_number, u.driver_name, u.cost_centre, u.city,
               u.vehicle_type, u.period_s, u.driving_s, u.idle_s, u.parked_s,
               u.utilisation_pct, u.idle_pct
        FROM tracksolid.fn_utilisation_daily(p_from, p_to) u
        LEFT JOIN tracksolid.devices d ON d.imei = u.imei
        WHERE (cc IS NULL OR lower(u.cost_centre) = lower(cc))
          AND (veh IS NULL OR d.plate_norm = reporting.normalize_plate(veh) OR u.imei = veh)
        ORDER BY u.day, u.vehicle_number, u.imei;
END
$$;

CREATE OR REPLACE FUNCTION reporting.fn_driver_behaviour_rows(
    p_from date, p_to date, p_cost_centre text DEFAULT NULL)
RETURNS TABLE (
    day date, imei text, vehicle_number text, driver_name text, cost_centre text, city text,
    trips bigint, distance_km numeric, driving_time_s bigint, max_speed_kmh real,
    harsh_acceleration bigint, harsh_braking bigint, overspeed bigint,
    aggression_index numeric)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
SET TimeZone = 'UTC'
AS $$
DECLARE
    cc text := reporting.filter_value(p_cost_centre);
BEGIN
    PERFORM reporting.check_day_range(p_from, p_to);
    PERFORM reporting.check_filters(cc);
    RETURN QUERY
        SELECT a.day, a.imei, a.vehicle_number, a.driver_name, a.cost_centre, a.city,
               a.trips, a.distance_km, a.driving_time_s, a.max_speed_kmh,
               a.harsh_acceleration, a.harsh_braking, a.overspeed, a.aggression_index
        FROM tracksolid.fn_driver_aggregates_daily(p_from, p_to) a
        WHERE cc IS NULL OR lower(a.cost_centre) = lower(cc)
        ORDER BY a.day, a.driver_name NULLS LAST, a.vehicle_number, a.imei;
END
$$;

REVOKE EXECUTE ON FUNCTION reporting.fn_utilisation_rows(date, date, text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION reporting.fn_driver_behaviour_rows(date, date, text) FROM PUBLIC;
