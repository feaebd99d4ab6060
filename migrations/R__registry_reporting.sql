-- Repeatable · the registry's reporting side (issue #15): subscriptions expiring soon and the
-- driver assignment history, for the read-API (dashboard_ro reads schema `reporting` only).
-- No PostGIS, no TimescaleDB: the same text runs on both database variants.

-- Active devices whose SIM / platform subscription (devices.expiration, stored by the device
-- sync from the API's `expiration`) ends within 30 days or has already ended, soonest first.
CREATE OR REPLACE VIEW reporting.v_devices_expiring AS
SELECT d.imei, tracksolid.vehicle_label(d) AS vehicle_number, d.vehicle_name, d.driver_name,
       d.cost_centre, d.city, d.account, d.sim, d.expiration,
       trunc(extract(epoch FROM d.expiration - now()) / 86400)::integer AS days_left,
       d.expiration <= now() AS expired
FROM tracksolid.devices d
WHERE d.is_active AND d.expiration < now() + interval '30 days';
COMMENT ON VIEW reporting.v_devices_expiring IS
    'Active devices whose subscription (devices.expiration) ends within 30 days or has ended; '
    'other horizons: reporting.fn_devices_expiring(days).';

-- Who drove which vehicle when (tracksolid.driver_assignments), for reports and audits.
-- valid_from NULL = since before any record (stored as -infinity, which many clients, Python's
-- datetime among them, cannot represent).
CREATE OR REPLACE VIEW reporting.v_driver_assignments AS
SELECT a.imei, tracksolid.vehicle_label(d) AS vehicle_number, a.driver_name, a.driver_phone,
       nullif(a.valid_from, '-infinity') AS valid_from, a.valid_to, a.valid_to IS NULL AS current, a.source, a.recorded_at
FROM tracksolid.driver_assignments a
JOIN tracksolid.devices d ON d.imei = a.imei;
COMMENT ON VIEW reporting.v_driver_assignments IS
    'Driver assignment history: [valid_from, valid_to), valid_from NULL = since before any '
    'record, valid_to NULL = current driver.';

-- GET /analytics/devices/expiring?days=N: active devices whose subscription ends within N days
-- (1-366) or has ended, soonest first, with counts. days_left: whole days, towards zero.
CREATE OR REPLACE FUNCTION reporting.fn_devices_expiring(p_days integer DEFAULT 30)
RETURNS json
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
SET TimeZone = 'UTC'
AS $$
DECLARE
    result json;
BEGIN
    IF p_days IS NULL OR p_days < 1 OR p_days > 366 THEN
        RAISE EXCEPTION 'days must be between 1 and 366 (got %)', coalesce(p_days::text, 'null')
            USING ERRCODE = '22023';
    END IF;
    WITH e AS (
        SELECT d.imei, tracksolid.vehicle_label(d) AS vehicle_number, d.driver_name,
               d.cost_centre, d.city, d.account, d.expiration,
               trunc(extract(epoch FROM d.expiration - now()) / 86400)::integer AS days_left,
               d.expiration <= now() AS expired
        FROM tracksolid.devices d
        WHERE d.is_active AND d.expiration < now() + make_interval(days => p_days)
    )
    SELECT json_build_object(
        'days', p_days,
        'devices', count(*),
        'expired', count(*) FILTER (WHERE e.expired),
        'no_expiration_known', (SELECT count(*) FROM tracksolid.devices d
                                WHERE d.is_active AND d.expiration IS NULL),
        'items', coalesce(json_agg(json_build_object(
                     'imei', e.imei, 'vehicle_number', e.vehicle_number,
                     'driver_name', e.driver_name, 'cost_centre', e.cost_centre,
                     'city', e.city, 'account', e.account, 'expiration', e.expiration,
                     'days_left', e.days_left, 'expired', e.expired)
                 ORDER BY e.expiration, e.vehicle_number), '[]'),
        'generated_at', now())
    INTO result
    FROM e;
    RETURN result;
END
$$;

REVOKE EXECUTE ON FUNCTION reporting.fn_devices_expiring(integer) FROM PUBLIC;
