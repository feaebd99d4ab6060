-- 0104 · Trip speeds from GPS fixes, and trips/stops derived from positions (issue #15).
-- Written by the worker's `derive_trips` job (trips/derive.py); docs/ingestion.md, "Trip
-- speeds and derived trips". The same text runs on TimescaleDB and on plain PostgreSQL.

-- ── Speeds of every trip, from the plausible fixes of its window ──────────────────────────
-- gps_* are always ours; max_speed_kmh / avg_speed_kmh are what consumers read: the API's
-- figure when it reported one, else ours (`*_source` says which; trigger below).
ALTER TABLE tracksolid.trips
    ADD COLUMN gps_max_speed_kmh  real,
    ADD COLUMN gps_avg_speed_kmh  real,
    ADD COLUMN overspeed_share    real,         -- 0..1 of the window's time above TRIP_OVERSPEED_KMH
    ADD COLUMN speed_fixes        integer,      -- plausible fixes with a speed in the window
    ADD COLUMN speed_note         text,         -- ok | too_few_fixes | no_end_time
    ADD COLUMN speed_window       tstzrange,    -- the [start, end] the gps_* figures were computed for
    ADD COLUMN speeds_at          timestamptz,
    ADD COLUMN max_speed_source   text,         -- api | gps | NULL (no figure)
    ADD COLUMN avg_speed_source   text;

COMMENT ON COLUMN tracksolid.trips.max_speed_kmh IS
    'The API''s max speed when it reported one, else gps_max_speed_kmh (max_speed_source).';
COMMENT ON COLUMN tracksolid.trips.speed_note IS
    'Why the gps_* speeds are what they are: ok | too_few_fixes | no_end_time.';

-- Derived gap fills are few; this keeps the job's scans of them cheap.
CREATE INDEX trips_derived_idx ON tracksolid.trips (imei, start_time) WHERE source = 'derived';

-- Precedence of the API's speeds over ours, whoever writes the row: the API writers set
-- max/avg_speed_kmh (possibly NULL on every re-poll); the speed job sets only gps_*.
-- * a NULL figure, or one nobody changed while it came from GPS, follows gps_*;
-- * a new non-NULL figure is the API's and is kept.
-- An UPDATE that changes nothing is skipped (a re-poll of a GPS-filled trip stays a no-op).
-- An INSERT that names its source keeps it (a restore from pg_dump, which fires triggers).
CREATE FUNCTION tracksolid.trips_speed_precedence() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.max_speed_kmh IS NULL
       OR (TG_OP = 'UPDATE' AND OLD.max_speed_source = 'gps'
           AND NEW.max_speed_kmh IS NOT DISTINCT FROM OLD.max_speed_kmh) THEN
        NEW.max_speed_kmh := NEW.gps_max_speed_kmh;
        NEW.max_speed_source := CASE WHEN NEW.gps_max_speed_kmh IS NOT NULL THEN 'gps' END;
    ELSIF (TG_OP = 'INSERT' AND NEW.max_speed_source IS NULL)
          OR (TG_OP = 'UPDATE' AND NEW.max_speed_kmh IS DISTINCT FROM OLD.max_speed_kmh) THEN
        NEW.max_speed_source := 'api';
    END IF;
    IF NEW.avg_speed_kmh IS NULL
       OR (TG_OP = 'UPDATE' AND OLD.avg_speed_source = 'gps'
           AND NEW.avg_speed_kmh IS NOT DISTINCT FROM OLD.avg_speed_kmh) THEN
        NEW.avg_speed_kmh := NEW.gps_avg_speed_kmh;
        NEW.avg_speed_source := CASE WHEN NEW.gps_avg_speed_kmh IS NOT NULL THEN 'gps' END;
    ELSIF (TG_OP = 'INSERT' AND NEW.avg_speed_source IS NULL)
          OR (TG_OP = 'UPDATE' AND NEW.avg_speed_kmh IS DISTINCT FROM OLD.avg_speed_kmh) THEN
        NEW.avg_speed_source := 'api';
    END IF;
    IF TG_OP = 'UPDATE' AND NEW IS NOT DISTINCT FROM OLD THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER trips_speed_precedence
    BEFORE INSERT OR UPDATE ON tracksolid.trips
    FOR EACH ROW EXECUTE FUNCTION tracksolid.trips_speed_precedence();

-- An API trip (any source but 'derived') replaces the derived gap fills it overlaps, at the
-- moment it is written: "never duplicates an API trip", even between two runs of the job.
-- BEFORE INSERT, so a fill with the very same (imei, start_time) is gone before the
-- writer's ON CONFLICT would otherwise update it in place and keep the 'derived' label.
CREATE FUNCTION tracksolid.trips_api_replaces_derived() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM tracksolid.trips d
    WHERE d.source = 'derived' AND d.imei = NEW.imei
      AND d.start_time > NEW.start_time - interval '2 days'
      AND d.start_time <= coalesce(NEW.end_time, NEW.start_time)
      AND coalesce(d.end_time, d.start_time) >= NEW.start_time;
    RETURN NEW;
END $$;

CREATE TRIGGER trips_api_replaces_derived
    BEFORE INSERT ON tracksolid.trips
    FOR EACH ROW WHEN (NEW.source <> 'derived')
    EXECUTE FUNCTION tracksolid.trips_api_replaces_derived();

-- ── Trips and stops derived from positions (the second source) ────────────────────────────
-- Every segment the algorithm finds, whether or not the API reported the same trip: the
-- reconciliation view compares the two. Those the API lacks are copied into `trips` with
-- source = 'derived'. Owned by the UTC day of start_time (a window is re-derived whole).
CREATE TABLE tracksolid.derived_trips (
    imei            text NOT NULL,
    start_time      timestamptz NOT NULL,    -- first moving fix
    end_time        timestamptz NOT NULL,    -- last moving fix
    start_lat       double precision,
    start_lng       double precision,
    end_lat         double precision,
    end_lng         double precision,
    distance_km     numeric(10,3) NOT NULL,  -- along the moving fixes
    driving_time_s  integer NOT NULL,
    fixes           integer NOT NULL,
    start_observed  boolean NOT NULL,        -- a fix precedes it (false: the data starts mid-trip)
    derived_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (imei, start_time)
);
CREATE INDEX derived_trips_start_idx ON tracksolid.derived_trips (start_time);

CREATE TABLE tracksolid.derived_stops (
    imei            text NOT NULL,
    start_time      timestamptz NOT NULL,    -- end of the trip before
    end_time        timestamptz NOT NULL,    -- start of the trip after
    duration_s      integer NOT NULL,
    acc_on          boolean,                 -- ignition on at every fix of the stop (idling); NULL: no fix
    lat             double precision,
    lng             double precision,
    derived_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (imei, start_time)
);
CREATE INDEX derived_stops_start_idx ON tracksolid.derived_stops (start_time);

-- The job finds late fixes by `received_at > watermark`: a BRIN index (tiny, cheap to keep up
-- on append-mostly data; on a hypertable one per chunk, compressed chunks skipped) saves it
-- reading the horizon's rows each run; autosummarize covers new pages without waiting for
-- a VACUUM. Built once, in one scan of the table, at deploy.
CREATE INDEX position_history_received_brin
    ON tracksolid.position_history USING brin (received_at) WITH (autosummarize = on);

-- Up to when (received_at, database time) the job has read position_history.
CREATE TABLE tracksolid.trip_derive_state (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    received_until  timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE tracksolid.derived_trips IS
    'Trips derived from position_history (trips/derive.py); gap fills are copied to trips as source=derived.';
COMMENT ON TABLE tracksolid.derived_stops IS
    'Stops between derived trips (trips/derive.py).';
COMMENT ON TABLE tracksolid.trip_derive_state IS
    'Watermark of the derive_trips job: positions received after it mark their windows dirty. Delete the row to re-derive the whole horizon.';
