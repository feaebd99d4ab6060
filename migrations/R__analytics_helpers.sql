-- Repeatable · small pure SQL helpers of the reporting layer (no table access, so no
-- SECURITY DEFINER; LANGUAGE sql so the planner can inline them).
-- Named `R__analytics_helpers` so it runs before R__analytics_views / R__reporting_* (the
-- runner applies repeatables in name order) — every other reporting file may use these.
-- Uses no PostGIS and no TimescaleDB: the same text runs on both database variants.

-- Canonical plate for joins: upper case, letters and digits only ('KCA 542Q' → 'KCA542Q').
-- Same rule as ts_shared.normalize_plate and the generated column devices.plate_norm.
CREATE OR REPLACE FUNCTION reporting.normalize_plate(p text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN nullif(upper(regexp_replace(coalesce(p, ''), '[^0-9A-Za-z]', '', 'g')), '');

-- The fleet's operational calendar day: East Africa Time (Nairobi, Mombasa, Kampala; UTC+3,
-- no daylight saving). The database stores UTC; day boundaries of every report use this.
CREATE OR REPLACE FUNCTION reporting.local_day(ts timestamptz)
RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (ts AT TIME ZONE 'Africa/Nairobi')::date;

-- Start of an EAT calendar day as a timestamptz.
CREATE OR REPLACE FUNCTION reporting.local_day_start(d date)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN d::timestamp AT TIME ZONE 'Africa/Nairobi';

-- Live status word of a vehicle from its last fix. Offline wins; a vehicle is moving above
-- 3 km/h (GPS drift at standstill stays below), idle when the ignition is on and it is not
-- moving, parked otherwise. A fix older than 24 h counts as offline even if `online` says not.
CREATE OR REPLACE FUNCTION reporting.vehicle_status(
    online boolean, acc_on boolean, speed_kmh real, gps_time timestamptz)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE
    WHEN gps_time IS NULL THEN 'no_fix'
    WHEN online IS FALSE OR gps_time < now() - interval '24 hours' THEN 'offline'
    WHEN coalesce(speed_kmh, 0) > 3 THEN 'moving'
    WHEN acc_on THEN 'idle'
    ELSE 'parked'
END;

-- Driver-behaviour class of an alarm. Poll alarms carry ids ('6', 'ubiAcce', 'overSpeed'),
-- push alarms similar ids or names; the name is the fallback for unknown ids.
CREATE OR REPLACE FUNCTION reporting.alarm_category(alarm_type text, alarm_name text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN alarm_type IN ('ubiAcce', 'harshAcce', 'harshAcceleration', 'rapidAcceleration')
        OR alarm_name ILIKE '%harsh accel%' OR alarm_name ILIKE '%rapid accel%'
        THEN 'harsh_acceleration'
    WHEN alarm_type IN ('ubiDece', 'harshDece', 'harshBraking', 'rapidDeceleration')
        OR alarm_name ILIKE '%harsh brak%' OR alarm_name ILIKE '%harsh decel%'
        OR alarm_name ILIKE '%rapid decel%'
        THEN 'harsh_braking'
    WHEN alarm_type IN ('6', 'overSpeed', 'fenceOverspeed', 'overspeed')
        OR alarm_name ILIKE '%overspeed%' OR alarm_name ILIKE '%over speed%'
        THEN 'overspeed'
    WHEN alarm_type IN ('ubiTurn') OR alarm_name ILIKE '%sharp turn%' THEN 'harsh_turn'
    WHEN alarm_type IN ('147', 'ubiColl') OR alarm_name ILIKE '%collision%' THEN 'collision'
    WHEN alarm_type IN ('1') OR alarm_name ILIKE '%sos%' THEN 'sos'
    WHEN alarm_type IN ('2', '17', '90') OR alarm_name ILIKE '%power%'
        OR alarm_name ILIKE '%battery%' THEN 'power'
    WHEN alarm_type IN ('4', '5', 'in', 'out', 'stayTimeIn', 'stayTimeOut')
        OR alarm_name ILIKE '%fence%' THEN 'geofence'
    ELSE 'other'
END;
