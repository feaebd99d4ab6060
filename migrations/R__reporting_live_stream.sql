-- The SQL side of GET /webhook/live-positions/stream (issue #19, dashboard/live_stream.py):
-- read the change feed reporting.live_position_changes (migration 0315) as the read-only role.
-- Named after R__reporting_core / R__reporting_geojson so reporting.v_live_positions exists.

-- Changes after `p_after` (up to `p_upto` when given), plus the ids in `p_gaps` (ids the
-- read-API skipped because their transaction had not committed yet), oldest first, at most
-- `p_limit`. One row per change; the newest change of each vehicle in the page (`latest`)
-- carries the vehicle's CURRENT state: the GeoJSON Feature exactly as in
-- reporting.fn_live_positions (text), and the fields the stream filters on. `feature` is NULL
-- on a latest row when the vehicle is gone (deleted, or its device deactivated).
CREATE OR REPLACE FUNCTION reporting.fn_live_position_changes(
    p_after bigint, p_upto bigint DEFAULT NULL, p_gaps bigint[] DEFAULT '{}',
    p_limit integer DEFAULT 10000)
RETURNS TABLE (change_id bigint, imei text, latest boolean, cost_centre text, acc_on boolean,
               status text, feature text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
SET TimeZone = 'UTC'
AS $$
    WITH c AS (
        SELECT c.change_id, c.imei
        FROM reporting.live_position_changes c
        WHERE (c.change_id > p_after AND (p_upto IS NULL OR c.change_id <= p_upto))
           OR c.change_id = ANY (coalesce(p_gaps, '{}'))
        ORDER BY c.change_id
        LIMIT least(greatest(p_limit, 1), 100000)
    ), newest AS (
        SELECT DISTINCT ON (c.imei) c.imei, c.change_id
        FROM c ORDER BY c.imei, c.change_id DESC
    )
    SELECT c.change_id, c.imei, n.change_id IS NOT NULL, lp.cost_centre, lp.acc_on, lp.status,
           CASE WHEN lp.imei IS NOT NULL THEN json_build_object(
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
                   'battery_pct', lp.battery_pct))::text END
    FROM c
    LEFT JOIN newest n ON n.change_id = c.change_id
    LEFT JOIN reporting.v_live_positions lp ON n.change_id IS NOT NULL AND lp.imei = c.imei
    ORDER BY c.change_id
$$;

-- The oldest and newest change kept (NULL when the table is empty) and the last change_id
-- handed out (the identity sequence's, which dashboard_ro may not read itself). A
-- Last-Event-ID below `oldest` was pruned, one above `last_issued` is unknown: both get a
-- full snapshot. Ids in (newest, last_issued] belong to transactions not committed yet (or
-- rolled back): the read-API watches them for a while (dashboard/live_stream.py ChangeCursor).
CREATE OR REPLACE FUNCTION reporting.fn_live_position_change_bounds(
    OUT oldest bigint, OUT newest bigint, OUT last_issued bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT (SELECT min(c.change_id) FROM reporting.live_position_changes c),
           (SELECT max(c.change_id) FROM reporting.live_position_changes c),
           coalesce(pg_sequence_last_value(
               pg_get_serial_sequence('reporting.live_position_changes', 'change_id')::regclass),
               0)
$$;

REVOKE EXECUTE ON FUNCTION reporting.fn_live_position_changes(bigint, bigint, bigint[], integer)
    FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION reporting.fn_live_position_change_bounds() FROM PUBLIC;
