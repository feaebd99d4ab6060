-- 0106 · Alarm classification: which alarm types are alarms and which are mere events (issue #15);
-- and (at the end) tracksolid.last_plausible_fix, the push receiver's GPS jump-check reference.
--
-- tracksolid.alarms holds everything JIMI calls an "alarm", polled (jimi.device.alarm.list) or
-- pushed (/pushalarm, jimi.push.device.alarm), and a large share of it is routine: ignition
-- on/off (ACC_ON/ACC_OFF, 197/198), geofence in/out, device booting. Counting those as alarms
-- made "Alarms today: 190" out of 62 ignition events. This table classifies every type id seen
-- in the contract (docs/jimi-open-api.md §3 "Alarm type ids") and the simulator:
--   kind      'alarm' (needs a person's attention; counted in every alarm KPI)
--             'event' (a fact about the vehicle; counted separately as events)
--   severity  critical | high | medium | low | info
-- A type not in this table counts as kind 'alarm', severity 'medium' (the readers coalesce):
-- a new or misspelt code must never vanish from the counts; add a row here (a new migration)
-- to classify it. Rows may be edited in place (UPDATE) by an operator; no code caches them.
-- Matching is on the exact stored alarm_type (poll: alertTypeId; push: alertType/alarmType).

CREATE TABLE tracksolid.alarm_types (
    alarm_type  text PRIMARY KEY,
    name        text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('alarm', 'event')),
    severity    text NOT NULL CHECK (severity IN ('critical', 'high', 'medium', 'low', 'info')),
    note        text
);

COMMENT ON TABLE tracksolid.alarm_types IS
    'Alarm vs event classification and severity per alarm_type; unknown types count as '
    'kind alarm, severity medium (docs/ingestion.md "Alarm classification").';

INSERT INTO tracksolid.alarm_types (alarm_type, name, kind, severity, note) VALUES
    -- device alarm ids (JIMI appendix)
    ('1',   'SOS',                 'alarm', 'critical', 'panic button pressed'),
    ('2',   'Power cut',           'alarm', 'high',     'external power disconnected: tamper or theft'),
    ('3',   'Vibration',           'alarm', 'medium',   'vibration while armed / parked'),
    ('4',   'Enter geofence',      'event', 'info',     'routine (depots, customers)'),
    ('5',   'Exit geofence',       'event', 'info',     'routine (depots, customers)'),
    ('6',   'Overspeed',           'alarm', 'high',     'device speed limit exceeded'),
    ('9',   'Displacement',        'alarm', 'high',     'moved while parked: possible theft or towing'),
    ('12',  'Booting',             'event', 'info',     'device (re)started'),
    ('17',  'Power off',           'alarm', 'high',     'device switched off: possible tamper'),
    ('90',  'Low battery',         'alarm', 'medium',   'device backup battery low'),
    ('147', 'Collision',           'alarm', 'critical', 'crash detected'),
    ('197', 'Engine on',           'event', 'info',     'ignition'),
    ('198', 'Engine off',          'event', 'info',     'ignition'),
    -- platform alarm ids (text)
    ('ACC_ON',         'ACC on',                   'event', 'info',     'ignition'),
    ('ACC_OFF',        'ACC off',                  'event', 'info',     'ignition'),
    ('in',             'Enter geofence',           'event', 'info',     'routine (depots, customers)'),
    ('out',            'Exit geofence',            'event', 'info',     'routine (depots, customers)'),
    ('overSpeed',      'Overspeed',                'alarm', 'high',     'platform speed limit exceeded'),
    ('fenceOverspeed', 'Overspeed in geofence',    'alarm', 'high',     'speed limit of a geofence exceeded'),
    ('offline',        'Offline',                  'event', 'low',      'connectivity; silent devices have their own report'),
    ('stayAlert',      'Stopped too long',         'alarm', 'low',      'parking time limit exceeded'),
    ('stayTimeIn',     'Too long inside geofence', 'alarm', 'low',      'dwell limit exceeded'),
    ('stayTimeOut',    'Too long outside geofence','alarm', 'low',      'dwell limit exceeded'),
    ('mileageAlarm',   'Mileage reached',          'event', 'low',      'maintenance reminder'),
    ('obd',            'OBD fault',                'alarm', 'medium',   'vehicle diagnostic fault'),
    ('ubiAcce',        'Harsh acceleration',       'alarm', 'medium',   'driver behaviour'),
    ('ubiDece',        'Harsh braking',            'alarm', 'medium',   'driver behaviour'),
    ('ubiTurn',        'Sharp turn',               'alarm', 'medium',   'driver behaviour'),
    ('ubiColl',        'Collision',                'alarm', 'critical', 'crash detected (platform)');

-- ── The reference fix of the GPS jump check for pushed fixes (issue #15) ───────────────────
-- The push receiver (webhook/store.py) judges each pushed fix against the device's last
-- plausible stored fix before it (ingest/quality.py). A function only to pin the plan: on a
-- table without fresh statistics the planner picks a bitmap scan of the device's whole history
-- plus a sort (cost grows with the history: milliseconds per delivery after a few thousand
-- fixes), where a backward index scan stops at the first row. Both settings only affect this
-- one-row probe.
CREATE FUNCTION tracksolid.last_plausible_fix(
    p_imei text, p_before timestamptz,
    OUT gps_time timestamptz, OUT lat double precision, OUT lng double precision)
RETURNS SETOF record
LANGUAGE sql STABLE PARALLEL SAFE
SET enable_bitmapscan = off
SET enable_sort = off
AS $$
    SELECT p.gps_time, p.lat, p.lng FROM tracksolid.position_history p
    WHERE p.imei = p_imei AND p.gps_time < p_before AND p.quality_flag IS NULL
    ORDER BY p.gps_time DESC LIMIT 1
$$;

COMMENT ON FUNCTION tracksolid.last_plausible_fix(text, timestamptz) IS
    'Last stored fix of a device before a time with quality_flag NULL: the reference of the '
    'GPS jump check (ingest/quality.py) used by the push receiver.';
