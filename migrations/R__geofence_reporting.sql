-- migrate: requires-extension postgis
-- Repeatable · the read-API's geofence answers (issue #16; docs/geofences.md, docs/api.md):
-- GET /geofences, GET /analytics/geofence-events, GET /analytics/out-of-region.
-- Same conventions as R__reporting_geojson.sql: SECURITY DEFINER with a fixed search_path
-- (dashboard_ro only uses schema `reporting`), SET TimeZone = 'UTC', bad parameters raise
-- SQLSTATE 22023 with a sentence (HTTP 422). Needs PostGIS (the geofence tables do).

-- Normalise a kind filter; 22023 for an unknown one.
CREATE OR REPLACE FUNCTION reporting.geofence_kind(p_kind text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v text := lower(reporting.filter_value(p_kind));
BEGIN
    IF v IS NOT NULL AND v NOT IN ('depot', 'customer_site', 'city_zone', 'region', 'no_go') THEN
        RAISE EXCEPTION 'kind must be one of depot, customer_site, city_zone, region, no_go (got "%")',
            left(p_kind, 40) USING ERRCODE = '22023';
    END IF;
    RETURN v;
END
$$;

-- Every geofence as a GeoJSON FeatureCollection (RFC 7946, 6 decimals), by name.
CREATE OR REPLACE FUNCTION reporting.fn_geofences(p_kind text DEFAULT NULL,
                                                  p_cost_centre text DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
SET TimeZone = 'UTC'
AS $$
-- plpgsql (checked when run, not when created): reporting.filter_value lives in
-- R__reporting_geojson.sql, applied after this file on a new database.
DECLARE
    v_kind text := reporting.geofence_kind(p_kind);
    v_cc   text := reporting.filter_value(p_cost_centre);
BEGIN
    RETURN (SELECT json_build_object(
        'type', 'FeatureCollection',
        'features', coalesce(json_agg(json_build_object(
            'type', 'Feature',
            'id', g.geofence_id,
            'geometry', ST_AsGeoJSON(g.geom, 6)::json,
            'properties', (g.properties || jsonb_strip_nulls(jsonb_build_object(
                'id', g.geofence_id, 'name', g.name, 'kind', g.kind,
                'cost_centre', g.cost_centre, 'city', g.city, 'radius_m', g.radius_m,
                'center', CASE WHEN g.center IS NOT NULL
                               THEN jsonb_build_array(round(ST_X(g.center)::numeric, 6),
                                                      round(ST_Y(g.center)::numeric, 6)) END,
                'vertices', ST_NPoints(g.geom),
                'updated_at', g.updated_at)))
            ) ORDER BY g.name), '[]'::json))
    FROM tracksolid.geofences g
    WHERE (v_kind IS NULL OR g.kind = v_kind)
      AND (v_cc IS NULL OR lower(g.cost_centre) = lower(v_cc)));
END
$$;

-- Out-of-region episodes with the vehicle, where it was seen (non-home region/city zones it
-- visited during the episode) and its last plausible fix of the episode.
CREATE OR REPLACE VIEW reporting.v_out_of_region AS
SELECT o.imei, d.vehicle_number, d.driver_name, d.cost_centre, d.city,
       o.left_at AS first_seen_at, o.last_seen_at, o.returned_at,
       o.returned_at IS NULL AS still_away, o.away_s, o.fixes,
       (SELECT array_agg(DISTINCT g.name ORDER BY g.name)
        FROM tracksolid.geofence_events e
        JOIN tracksolid.geofences g ON g.geofence_id = e.geofence_id
        WHERE e.imei = o.imei AND g.kind IN ('region', 'city_zone')
          AND e.entered_at <= o.last_seen_at
          AND coalesce(e.exited_at, 'infinity') > o.left_at
          AND NOT (lower(g.city) IS NOT DISTINCT FROM lower(d.city) AND g.city IS NOT NULL)
          AND NOT (lower(g.cost_centre) IS NOT DISTINCT FROM lower(d.cost_centre)
                   AND g.cost_centre IS NOT NULL)) AS seen_in,
       p.lat AS last_lat, p.lng AS last_lng
FROM tracksolid.out_of_region_events o
JOIN tracksolid.devices d ON d.imei = o.imei
LEFT JOIN LATERAL (SELECT ph.lat, ph.lng FROM tracksolid.position_history ph
                   WHERE ph.imei = o.imei AND ph.gps_time = o.last_seen_at) p ON true;

COMMENT ON VIEW reporting.v_out_of_region IS
    'Vehicles seen outside every region/city_zone geofence of their city or cost centre (geofence_events job). docs/geofences.md.';

-- Common checks of the two analytics endpoints: vehicle and cost centre must exist.
CREATE OR REPLACE FUNCTION reporting.check_geofence_window(p_from timestamptz, p_to timestamptz,
                                                           p_limit integer, p_offset integer)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF p_from IS NOT NULL AND p_to IS NOT NULL AND p_to <= p_from THEN
        RAISE EXCEPTION 'to must be after from' USING ERRCODE = '22023';
    END IF;
    IF p_limit < 1 OR p_limit > 5000 OR p_offset < 0 THEN
        RAISE EXCEPTION 'limit must be 1-5000 and offset 0 or more' USING ERRCODE = '22023';
    END IF;
    RETURN true;
END
$$;

-- Visits (enter/exit events) overlapping [p_from, p_to), newest entry first, paged.
DROP FUNCTION IF EXISTS reporting.fn_geofence_events(text, bigint, text, timestamptz,
                                                     timestamptz, text, integer, integer);
CREATE OR REPLACE FUNCTION reporting.fn_geofence_events(
    p_vehicle text DEFAULT NULL, p_geofence_id bigint DEFAULT NULL, p_kind text DEFAULT NULL,
    p_from timestamptz DEFAULT NULL, p_to timestamptz DEFAULT NULL,
    p_cost_centre text DEFAULT NULL, p_limit integer DEFAULT 500, p_offset integer DEFAULT 0)
RETURNS json
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_vehicle text := reporting.filter_value(p_vehicle);
    v_kind    text := reporting.geofence_kind(p_kind);
    v_cc      text := reporting.filter_value(p_cost_centre);
    v_out     json;
BEGIN
    PERFORM reporting.check_geofence_window(p_from, p_to, p_limit, p_offset);
    PERFORM reporting.check_filters(v_cc, NULL, NULL,
        CASE WHEN v_vehicle IS NULL THEN NULL ELSE ARRAY[v_vehicle] END, 'vehicle');
    IF p_geofence_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM tracksolid.geofences WHERE geofence_id = p_geofence_id) THEN
        RAISE EXCEPTION 'unknown geofence_id % — see /geofences', p_geofence_id
            USING ERRCODE = '22023';
    END IF;
    WITH m AS (
        SELECT e.*, g.name, g.kind, d.vehicle_number, d.driver_name, d.cost_centre
        FROM tracksolid.geofence_events e
        JOIN tracksolid.geofences g ON g.geofence_id = e.geofence_id
        LEFT JOIN tracksolid.devices d ON d.imei = e.imei
        WHERE (p_geofence_id IS NULL OR e.geofence_id = p_geofence_id)
          AND (v_kind IS NULL OR g.kind = v_kind)
          AND (p_to IS NULL OR e.entered_at < p_to)
          AND (p_from IS NULL OR coalesce(e.exited_at, 'infinity') > p_from)
          AND (v_vehicle IS NULL OR e.imei = v_vehicle
               OR d.plate_norm = reporting.normalize_plate(v_vehicle))
          AND (v_cc IS NULL OR lower(d.cost_centre) = lower(v_cc))
    ), page AS (
        SELECT * FROM m ORDER BY entered_at DESC, imei, geofence_id
        LIMIT p_limit OFFSET p_offset
    )
    SELECT json_build_object(
        'events', coalesce((SELECT json_agg(json_build_object(
            'imei', imei, 'vehicle_number', vehicle_number, 'driver_name', driver_name,
            'cost_centre', cost_centre, 'geofence_id', geofence_id, 'geofence', name,
            'kind', kind, 'entered_at', entered_at, 'exited_at', exited_at,
            'inside', exited_at IS NULL, 'last_inside_at', last_inside_at,
            'dwell_s', dwell_s, 'fixes', fixes)
            ORDER BY entered_at DESC, imei, geofence_id) FROM page), '[]'::json),
        'total', (SELECT count(*) FROM m),
        'limit', p_limit, 'offset', p_offset,
        'next_offset', CASE WHEN (SELECT count(*) FROM m) > p_offset + p_limit
                            THEN p_offset + p_limit END)
    INTO v_out;
    RETURN v_out;
END
$$;

-- Out-of-region episodes overlapping [p_from, p_to), still-away first, then newest.
DROP FUNCTION IF EXISTS reporting.fn_out_of_region(text, timestamptz, timestamptz, text,
                                                   integer, integer);
CREATE OR REPLACE FUNCTION reporting.fn_out_of_region(
    p_vehicle text DEFAULT NULL, p_from timestamptz DEFAULT NULL, p_to timestamptz DEFAULT NULL,
    p_cost_centre text DEFAULT NULL, p_limit integer DEFAULT 500, p_offset integer DEFAULT 0)
RETURNS json
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_vehicle text := reporting.filter_value(p_vehicle);
    v_cc      text := reporting.filter_value(p_cost_centre);
    v_out     json;
BEGIN
    PERFORM reporting.check_geofence_window(p_from, p_to, p_limit, p_offset);
    PERFORM reporting.check_filters(v_cc, NULL, NULL,
        CASE WHEN v_vehicle IS NULL THEN NULL ELSE ARRAY[v_vehicle] END, 'vehicle');
    WITH m AS (
        SELECT o.* FROM reporting.v_out_of_region o
        WHERE (p_to IS NULL OR o.first_seen_at < p_to)
          AND (p_from IS NULL OR coalesce(o.returned_at, 'infinity') > p_from)
          AND (v_vehicle IS NULL OR o.imei = v_vehicle
               OR reporting.normalize_plate(o.vehicle_number) = reporting.normalize_plate(v_vehicle))
          AND (v_cc IS NULL OR lower(o.cost_centre) = lower(v_cc))
    ), page AS (
        SELECT * FROM m ORDER BY still_away DESC, first_seen_at DESC, imei
        LIMIT p_limit OFFSET p_offset
    )
    SELECT json_build_object(
        'episodes', coalesce((SELECT json_agg(json_build_object(
            'imei', imei, 'vehicle_number', vehicle_number, 'driver_name', driver_name,
            'cost_centre', cost_centre, 'city', city, 'first_seen_at', first_seen_at,
            'last_seen_at', last_seen_at, 'returned_at', returned_at, 'still_away', still_away,
            'away_s', away_s, 'fixes', fixes, 'seen_in', coalesce(to_json(seen_in), '[]'::json),
            'last_position', CASE WHEN last_lat IS NOT NULL
                                  THEN json_build_object('type', 'Point', 'coordinates',
                                                         json_build_array(last_lng, last_lat)) END)
            ORDER BY still_away DESC, first_seen_at DESC, imei) FROM page), '[]'::json),
        'total', (SELECT count(*) FROM m),
        'limit', p_limit, 'offset', p_offset,
        'next_offset', CASE WHEN (SELECT count(*) FROM m) > p_offset + p_limit
                            THEN p_offset + p_limit END)
    INTO v_out;
    RETURN v_out;
END
$$;
