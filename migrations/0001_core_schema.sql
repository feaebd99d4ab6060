-- 0001 · Core schema `tracksolid` (plain PostgreSQL; PostGIS and TimescaleDB parts follow).
-- Source: seed 000 §5 (tables) and seed 002 (DATA_FLOW). Conventions:
--   * every fact table has a natural unique key so every write is INSERT ... ON CONFLICT;
--   * units in column names (distance_km, duration_s, speed_kmh); timestamptz (UTC) everywhere;
--   * raw jsonb keeps the source record where the source is messy (pushes, registry).
-- Hypertable candidates (position_history, heartbeats, fuel_readings, temperature_readings)
-- carry the time column in their primary key, as TimescaleDB requires.

CREATE SCHEMA IF NOT EXISTS tracksolid;
CREATE SCHEMA IF NOT EXISTS reporting;

-- Device / vehicle / driver registry --------------------------------------------------------
CREATE TABLE tracksolid.devices (
    imei                text PRIMARY KEY,
    device_name         text,
    mc_type             text,
    mc_type_use_scope   text,
    sim                 text,
    iccid               text,
    imsi                text,
    expiration          timestamptz,
    activation_time     timestamptz,
    remark              text,
    vehicle_name        text,
    vehicle_icon        text,
    vehicle_number      text,
    vehicle_models      text,
    vehicle_brand       text,
    car_frame           text,
    vin                 text,
    engine_number       text,
    license_plate_no    text,
    driver_name         text,
    driver_phone        text,
    enabled_flag        boolean,
    device_group_id     text,
    device_group        text,
    account             text,              -- owning Tracksolid account (FIX-M19)
    customer_name       text,
    fuel_100km_l        numeric(6,2),      -- nominal consumption, litres per 100 km
    device_status       text,
    current_mileage_km  double precision,
    -- Registry fields maintained by operators (CSV import); an API sync never nulls them.
    cost_centre         text,
    city                text,
    vehicle_type        text,
    is_active           boolean NOT NULL DEFAULT true,
    plate_norm          text GENERATED ALWAYS AS
                        (nullif(upper(regexp_replace(coalesce(vehicle_number, ''), '[^0-9A-Za-z]', '', 'g')), '')) STORED,
    source              text NOT NULL DEFAULT 'api',   -- api | push | csv
    first_seen_at       timestamptz NOT NULL DEFAULT now(),
    api_synced_at       timestamptz,
    registry_updated_at timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    raw                 jsonb
);
CREATE INDEX devices_plate_norm_idx ON tracksolid.devices (plate_norm);
CREATE INDEX devices_account_idx ON tracksolid.devices (account);
CREATE INDEX devices_cost_centre_idx ON tracksolid.devices (cost_centre);

-- Current fix per IMEI (upserted only when newer) -------------------------------------------
CREATE TABLE tracksolid.live_positions (
    imei                text PRIMARY KEY,
    gps_time            timestamptz NOT NULL,
    lat                 double precision NOT NULL,
    lng                 double precision NOT NULL,
    speed_kmh           real,
    direction_deg       smallint,
    acc_on              boolean,
    online              boolean,
    pos_type            text,
    loc_desc            text,
    hb_time             timestamptz,
    battery_pct         real,
    power_v             real,
    gps_signal          smallint,
    satellites          smallint,
    current_mileage_km  double precision,
    source              text NOT NULL,     -- poll | push
    account             text,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX live_positions_gps_time_idx ON tracksolid.live_positions (gps_time DESC);

-- Every GPS fix (hypertable when TimescaleDB is present) ------------------------------------
CREATE TABLE tracksolid.position_history (
    imei                text NOT NULL,
    gps_time            timestamptz NOT NULL,
    lat                 double precision NOT NULL,
    lng                 double precision NOT NULL,
    speed_kmh           real,
    direction_deg       smallint,
    acc_on              boolean,
    pos_type            text,
    satellites          smallint,
    gps_mode            smallint,          -- 0 real-time, 1 re-transmitted
    altitude_m          real,
    mileage_km          double precision,  -- device odometer when the source gives one
    source              text NOT NULL,     -- poll | track_list | push
    quality_flag        text,              -- e.g. implausible_jump (flagged, never dropped)
    implied_speed_kmh   real,
    received_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (imei, gps_time)
);

-- Trip summaries (jimi.device.track.mileage, /pushtripreport) ------------------------------
CREATE TABLE tracksolid.trips (
    trip_id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    imei                text NOT NULL,
    start_time          timestamptz NOT NULL,
    end_time            timestamptz,
    start_lat           double precision,
    start_lng           double precision,
    end_lat             double precision,
    end_lng             double precision,
    distance_km         numeric(10,3),     -- API sends metres: divided by 1000 (FIX-M11/M16)
    driving_time_s      integer,
    avg_speed_kmh       real,
    max_speed_kmh       real,
    start_mileage_km    double precision,
    end_mileage_km      double precision,
    fuel_l              real,
    source              text NOT NULL,     -- mileage | push
    raw                 jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (imei, start_time)
);
CREATE INDEX trips_start_time_idx ON tracksolid.trips (start_time DESC);

-- Stops: parking (ignition off) and idling (ignition on) (FIX-M13) --------------------------
CREATE TABLE tracksolid.parking_events (
    imei                text NOT NULL,
    start_time          timestamptz NOT NULL,
    end_time            timestamptz,
    duration_s          integer,
    acc_on              boolean NOT NULL,  -- false = parked, true = idling
    lat                 double precision,
    lng                 double precision,
    address             text,
    account             text,
    raw                 jsonb,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (imei, start_time, acc_on)
);
CREATE INDEX parking_events_start_idx ON tracksolid.parking_events (start_time DESC);

-- Alarms (poll: alertTypeId/alarmTypeName FIX-E06; push: alarmType/alarmName) -------------
CREATE TABLE tracksolid.alarms (
    alarm_id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    imei                text NOT NULL,
    alarm_time          timestamptz NOT NULL,
    alarm_type          text NOT NULL,
    alarm_name          text,
    lat                 double precision,
    lng                 double precision,
    speed_kmh           real,
    source              text NOT NULL,     -- poll | push | push_openapi
    account             text,
    raw                 jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (imei, alarm_time, alarm_type)
);
CREATE INDEX alarms_time_idx ON tracksolid.alarms (alarm_time DESC);

-- OBD diagnostics ----------------------------------------------------------------------------
CREATE TABLE tracksolid.obd_readings (
    imei                text NOT NULL,
    reading_time        timestamptz NOT NULL,
    odometer_km         double precision,
    accumulated_mileage_km double precision,
    remaining_fuel_l    real,
    remaining_fuel_pct  real,
    coolant_temp_c      real,
    battery_voltage_v   real,
    rpm                 real,
    speed_kmh           real,
    vin                 text,
    source              text NOT NULL,     -- poll | push
    raw                 jsonb,
    PRIMARY KEY (imei, reading_time)
);

-- Device events: LOGIN/LOGOUT, IoT-hub events ----------------------------------------------
CREATE TABLE tracksolid.device_events (
    imei                text NOT NULL,
    event_time          timestamptz NOT NULL,
    event_type          text NOT NULL,
    event_content       text,
    timezone            text,
    source              text NOT NULL,
    raw                 jsonb,
    PRIMARY KEY (imei, event_time, event_type)
);

-- Heartbeats (hypertable when TimescaleDB is present) ---------------------------------------
CREATE TABLE tracksolid.heartbeats (
    imei                text NOT NULL,
    gate_time           timestamptz NOT NULL,
    power_level         smallint,
    gsm_signal          smallint,
    acc_on              boolean,
    oil_ele             text,
    gps_pos             boolean,
    power_status        text,
    fortify             boolean,
    raw                 jsonb,
    PRIMARY KEY (imei, gate_time)
);

-- Fuel sensor readings (hypertable when TimescaleDB is present) -----------------------------
CREATE TABLE tracksolid.fuel_readings (
    imei                text NOT NULL,
    reading_time        timestamptz NOT NULL,
    fuel_level          real,              -- as sent by the sensor (unit in `unit`)
    unit                text,
    raw                 jsonb,
    PRIMARY KEY (imei, reading_time)
);

-- Temperature sensor readings (hypertable when TimescaleDB is present) ----------------------
CREATE TABLE tracksolid.temperature_readings (
    imei                text NOT NULL,
    reading_time        timestamptz NOT NULL,
    sensor              text NOT NULL DEFAULT '',
    temperature_c       real,
    raw                 jsonb,
    PRIMARY KEY (imei, reading_time, sensor)
);

-- Fault codes (DTC) -------------------------------------------------------------------------
CREATE TABLE tracksolid.fault_codes (
    imei                text NOT NULL,
    reported_at         timestamptz NOT NULL,
    code                text NOT NULL,
    description         text,
    raw                 jsonb,
    PRIMARY KEY (imei, reported_at, code)
);

-- LBS (cell tower) readings -----------------------------------------------------------------
CREATE TABLE tracksolid.lbs_readings (
    imei                text NOT NULL,
    gate_time           timestamptz NOT NULL,
    mcc                 text,
    mnc                 text,
    cells               jsonb,
    post_type           smallint,
    raw                 jsonb,
    PRIMARY KEY (imei, gate_time)
);

-- Audit trail of every API call, push delivery, job and import -------------------------------
CREATE TABLE tracksolid.ingestion_log (
    log_id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    logged_at           timestamptz NOT NULL DEFAULT now(),
    source              text NOT NULL,     -- api | push | job | import
    method              text NOT NULL,     -- API method, push path, job or importer name
    target              text,              -- account / IMEI batch / file
    ok                  boolean NOT NULL,
    result_code         integer,
    rows                integer,
    duration_ms         integer,
    attempts            smallint,
    error               text,
    detail              jsonb
);
CREATE INDEX ingestion_log_method_time_idx ON tracksolid.ingestion_log (source, method, logged_at DESC);
CREATE INDEX ingestion_log_time_idx ON tracksolid.ingestion_log (logged_at DESC);

-- OAuth token shared by every process -------------------------------------------------------
CREATE TABLE tracksolid.api_token_cache (
    cache_key           text PRIMARY KEY,  -- app_key:user_id
    access_token        text NOT NULL,
    refresh_token       text,
    expires_at          timestamptz NOT NULL,
    obtained_at         timestamptz NOT NULL DEFAULT now()
);

-- Raw push deliveries, stored before parsing ------------------------------------------------
CREATE TABLE tracksolid.push_inbox (
    inbox_id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at         timestamptz NOT NULL DEFAULT now(),
    path                text NOT NULL,     -- /pushgps ... or the Open-API push path
    msg_type            text,              -- Open-API msgType
    item_count          integer NOT NULL DEFAULT 0,
    items_ok            integer NOT NULL DEFAULT 0,
    items_failed        integer NOT NULL DEFAULT 0,
    payload             jsonb,             -- the decoded data_list / data
    raw_body            text,              -- kept when the body could not be decoded
    errors              jsonb,             -- [{index, reason, item}] for items that failed
    status              text NOT NULL DEFAULT 'stored'   -- stored | parsed | partial | rejected
);
CREATE INDEX push_inbox_received_idx ON tracksolid.push_inbox (received_at DESC);
CREATE INDEX push_inbox_status_idx ON tracksolid.push_inbox (status) WHERE status <> 'parsed';

COMMENT ON SCHEMA tracksolid IS 'Live telematics data: the single source of truth (seed 000 §8 rule 10).';
COMMENT ON SCHEMA reporting IS 'Read layer for the dashboards: views and fn_* returning GeoJSON.';
