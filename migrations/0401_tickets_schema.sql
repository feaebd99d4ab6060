-- migrate: requires-extension postgis
-- 0401 · Tickets schema `tickets`: the INC change stream from the tickets bucket (seed 003).
-- Conventions (seed 003 "as built"):
--   * raw-jsonb-first: `tickets.inc.raw` is the cleaned source row and the source of truth;
--     every typed column is a STORED generated column derived from `raw`, so a re-import or a
--     changed parse rule can never leave a typed column out of step with `raw`;
--   * the feed sends naive EAT (Africa/Nairobi, UTC+3, no DST) times: `tickets.eat_ts()`
--     converts them to timestamptz; anything it cannot read becomes NULL (the row is kept);
--   * `geom` is resolved by a BEFORE trigger: feed lat/lng, else the geocoded location
--     (`tickets.geo_locations`), else the geocoded cluster (`tickets.geo_clusters`).
-- The helper functions are IMMUTABLE single-expression SQL so the planner inlines them into
-- the generated-column expressions (the import benchmark depends on that).

CREATE SCHEMA IF NOT EXISTS tickets;
COMMENT ON SCHEMA tickets IS 'Field-service tickets (INC change stream from S3) and their geocode caches (seed 003).';

-- Helpers used by the generated columns ---------------------------------------------------

-- Naive EAT text `YYYY-MM-DD[ HH:MM[:SS[.ffffff]]]` (T separator accepted) → timestamptz.
-- NULL for empty / unparsable / impossible dates (2026-02-30): never raises. The importer
-- trims every value, so no trimming here. EAT is UTC+3 all year (no DST since 1960), so a
-- fixed offset is exact and keeps the function immutable and cheap (it runs 7 times a row).
CREATE FUNCTION tickets.eat_ts(t text) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE
    WHEN t ~ '^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])([ T]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?)?$'
    THEN CASE
        WHEN substr(t, 9, 2) COLLATE "C" <= '28'
          OR substr(t, 9, 2)::int <= extract(day FROM
                 make_date(substr(t, 1, 4)::int, substr(t, 6, 2)::int, 1) + interval '1 month - 1 day')
        THEN make_timestamp(
                 substr(t, 1, 4)::int, substr(t, 6, 2)::int, substr(t, 9, 2)::int,
                 coalesce(nullif(substr(t, 12, 2), '')::int, 0),
                 coalesce(nullif(substr(t, 15, 2), '')::int, 0),
                 coalesce(nullif(substr(t, 18), '')::float8, 0))
             AT TIME ZONE interval '03:00'
        END
    END
$$;

-- Number from text; NULL when empty or not a plain decimal number.
CREATE FUNCTION tickets.to_num(t text) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE WHEN btrim(t) ~ '^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d{1,3})?$' THEN btrim(t)::numeric END
$$;

-- Boolean from true/false, t/f, 1/0, yes/no, y/n (any case); else NULL.
CREATE FUNCTION tickets.to_bool(t text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE lower(btrim(t))
    WHEN 'true' THEN true WHEN 't' THEN true WHEN '1' THEN true WHEN 'yes' THEN true WHEN 'y' THEN true
    WHEN 'false' THEN false WHEN 'f' THEN false WHEN '0' THEN false WHEN 'no' THEN false WHEN 'n' THEN false
END
$$;

-- MTTR in whole minutes: the feed sends minutes as a number ("125", "125.4"); an `H:MM[:SS]`
-- duration is also accepted. NULL until the ticket is closed.
CREATE FUNCTION tickets.mttr_minutes(t text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE
    WHEN btrim(t) ~ '^\+?(\d+\.?\d*|\.\d+)$' AND length(btrim(t)) < 12 THEN round(btrim(t)::numeric)::integer
    WHEN btrim(t) ~ '^\d{1,6}:[0-5]\d(:[0-5]\d)?$'
    THEN split_part(btrim(t), ':', 1)::integer * 60 + split_part(btrim(t), ':', 2)::integer
         + CASE WHEN split_part(btrim(t), ':', 3) >= '30' THEN 1 ELSE 0 END
END
$$;

-- Canonical status from the feed's raw_status (upper-cased by the importer).
-- new | assigned | in_progress | pending | resolved | closed | cancelled | other
-- The common spellings are matched literally; only the rest pay for the regexp.
CREATE FUNCTION tickets.norm_status(t text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE upper(t)
    WHEN 'NEW' THEN 'new' WHEN 'ASSIGNED' THEN 'assigned' WHEN 'IN PROGRESS' THEN 'in_progress'
    WHEN 'PENDING' THEN 'pending' WHEN 'RESOLVED' THEN 'resolved' WHEN 'CLOSED' THEN 'closed'
    WHEN 'CANCELLED' THEN 'cancelled'
    ELSE CASE regexp_replace(upper(btrim(t)), '[\s_-]+', ' ', 'g')
        WHEN '' THEN NULL
        WHEN 'NEW' THEN 'new' WHEN 'OPEN' THEN 'new' WHEN 'QUEUED' THEN 'new' WHEN 'REGISTERED' THEN 'new'
        WHEN 'ASSIGNED' THEN 'assigned' WHEN 'ACKNOWLEDGED' THEN 'assigned'
        WHEN 'IN PROGRESS' THEN 'in_progress' WHEN 'INPROGRESS' THEN 'in_progress'
        WHEN 'WORK IN PROGRESS' THEN 'in_progress' WHEN 'WIP' THEN 'in_progress'
        WHEN 'PENDING' THEN 'pending' WHEN 'ON HOLD' THEN 'pending' WHEN 'WAITING' THEN 'pending'
        WHEN 'RESOLVED' THEN 'resolved'
        WHEN 'CLOSED' THEN 'closed' WHEN 'COMPLETED' THEN 'closed' WHEN 'DONE' THEN 'closed'
        WHEN 'CANCELLED' THEN 'cancelled' WHEN 'CANCELED' THEN 'cancelled' WHEN 'REJECTED' THEN 'cancelled'
        ELSE CASE WHEN t IS NULL THEN NULL ELSE 'other' END
    END
END
$$;

-- Bucket of a raw status: open (someone must act) | pending (waiting) | closed.
-- Unknown statuses count as open so they stay visible on the map.
CREATE FUNCTION tickets.status_bucket(t text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE tickets.norm_status(t)
    WHEN 'pending' THEN 'pending'
    WHEN 'resolved' THEN 'closed' WHEN 'closed' THEN 'closed' WHEN 'cancelled' THEN 'closed'
    ELSE CASE WHEN tickets.norm_status(t) IS NULL THEN NULL ELSE 'open' END
END
$$;

-- Gazetteers (geocode caches) -------------------------------------------------------------
-- One row per looked-up name, including misses, so a name is sent to the geocoder once.
-- status: ok (point usable) | not_found | wrong_city (rejected by the 25 km guard).
-- provider 'manual' marks an operator's correction; the importer never overwrites it.
CREATE TABLE tickets.geo_clusters (
    cluster             text PRIMARY KEY,          -- as in raw->>'cluster' (trimmed)
    query               text NOT NULL,             -- what was sent to the geocoder
    status              text NOT NULL CHECK (status IN ('ok', 'not_found', 'wrong_city')),
    lat                 double precision,
    lng                 double precision,
    display_name        text,
    provider            text NOT NULL DEFAULT 'locationiq',
    geocoded_at         timestamptz NOT NULL DEFAULT now(),
    geom                geometry(Point, 4326) GENERATED ALWAYS AS (
                            CASE WHEN status = 'ok' AND lat IS NOT NULL AND lng IS NOT NULL
                                 THEN ST_SetSRID(ST_MakePoint(lng, lat), 4326) END) STORED
);

CREATE TABLE tickets.geo_locations (
    location_name       text NOT NULL,             -- as in raw->>'location_name' (trimmed)
    cluster             text NOT NULL DEFAULT '',  -- '' when the ticket has no cluster
    query               text NOT NULL,             -- cleaned name (network codes stripped)
    status              text NOT NULL CHECK (status IN ('ok', 'not_found', 'wrong_city')),
    lat                 double precision,
    lng                 double precision,
    display_name        text,
    distance_km         double precision,          -- from the reference (cluster / city) point
    provider            text NOT NULL DEFAULT 'locationiq',
    geocoded_at         timestamptz NOT NULL DEFAULT now(),
    geom                geometry(Point, 4326) GENERATED ALWAYS AS (
                            CASE WHEN status = 'ok' AND lat IS NOT NULL AND lng IS NOT NULL
                                 THEN ST_SetSRID(ST_MakePoint(lng, lat), 4326) END) STORED,
    PRIMARY KEY (location_name, cluster)
);

-- The INC tickets (current state; upserted on ticket_id, never deleted) --------------------
CREATE TABLE tickets.inc (
    ticket_id           text PRIMARY KEY,
    raw                 jsonb NOT NULL,
    raw_status          text GENERATED ALWAYS AS (nullif(upper(btrim(raw ->> 'raw_status')), '')) STORED,
    normalized_status   text GENERATED ALWAYS AS (tickets.norm_status(raw ->> 'raw_status')) STORED,
    bucket              text GENERATED ALWAYS AS (tickets.status_bucket(raw ->> 'raw_status')) STORED,
    -- The feed's flag wins; without one a ticket is actionable while its bucket is `open`.
    is_actionable       boolean GENERATED ALWAYS AS (coalesce(
                            tickets.to_bool(raw ->> 'is_actionable'),
                            tickets.status_bucket(raw ->> 'raw_status') = 'open')) STORED,
    cluster             text GENERATED ALWAYS AS (nullif(btrim(raw ->> 'cluster'), '')) STORED,
    region              text GENERATED ALWAYS AS (nullif(lower(btrim(raw ->> 'region')), '')) STORED,
    location_name       text GENERATED ALWAYS AS (nullif(btrim(raw ->> 'location_name'), '')) STORED,
    assigned_team       text GENERATED ALWAYS AS (nullif(btrim(raw ->> 'assigned_team'), '')) STORED,
    owner               text GENERATED ALWAYS AS (nullif(btrim(raw ->> 'owner'), '')) STORED,
    sla_status          text GENERATED ALWAYS AS (nullif(btrim(raw ->> 'sla_status'), '')) STORED,
    mttr                integer GENERATED ALWAYS AS (tickets.mttr_minutes(raw ->> 'mttr')) STORED,
    -- Lifecycle: created_at_service → closed_at. *_seen_at / source_* are export bookkeeping.
    created_at_service  timestamptz GENERATED ALWAYS AS (tickets.eat_ts(raw ->> 'created_at_service')) STORED,
    scheduled_at        timestamptz GENERATED ALWAYS AS (tickets.eat_ts(raw ->> 'scheduled_at')) STORED,
    closed_at           timestamptz GENERATED ALWAYS AS (tickets.eat_ts(raw ->> 'closed_at')) STORED,
    first_seen_at       timestamptz GENERATED ALWAYS AS (tickets.eat_ts(raw ->> 'first_seen_at')) STORED,
    last_seen_at        timestamptz GENERATED ALWAYS AS (tickets.eat_ts(raw ->> 'last_seen_at')) STORED,
    source_created_at   timestamptz GENERATED ALWAYS AS (tickets.eat_ts(raw ->> 'source_created_at')) STORED,
    source_updated_at   timestamptz GENERATED ALWAYS AS (tickets.eat_ts(raw ->> 'source_updated_at')) STORED,
    geom                geometry(Point, 4326),     -- set by tickets.inc_resolve_geom()
    geo_source          text,                      -- feed | location | cluster | NULL
    -- COALESCE(feed, geocode): geom already holds the feed point when the feed has one.
    latitude            double precision GENERATED ALWAYS AS (ST_Y(geom)) STORED,
    longitude           double precision GENERATED ALWAYS AS (ST_X(geom)) STORED,
    geog                geography(Point, 4326) GENERATED ALWAYS AS (geom::geography) STORED,
    source_key          text,                      -- the change file that last changed the row
    ingested_at         timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
-- No b-tree indexes on bucket/cluster/times: the table is current state (~21k rows), the
-- reporting functions scan it in milliseconds, and each index would slow every import.
CREATE INDEX inc_geom_idx ON tickets.inc USING gist (geom);
CREATE INDEX inc_geog_idx ON tickets.inc USING gist (geog);

-- The feed's own point: lat/lng in range and not 0,0; else NULL.
CREATE FUNCTION tickets.feed_point(raw jsonb) RETURNS geometry
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE
    WHEN tickets.to_num(raw ->> 'latitude') BETWEEN -90 AND 90
     AND tickets.to_num(raw ->> 'longitude') BETWEEN -180 AND 180
     AND NOT (tickets.to_num(raw ->> 'latitude') = 0 AND tickets.to_num(raw ->> 'longitude') = 0)
    THEN ST_SetSRID(ST_MakePoint(tickets.to_num(raw ->> 'longitude')::float8,
                                 tickets.to_num(raw ->> 'latitude')::float8), 4326)
END
$$;

-- Resolve `geom`: feed point → geocoded location → geocoded cluster. Fires on insert and
-- whenever `raw` or `geom` is assigned; after a geocode run the importer sets `geom = NULL`
-- on the affected rows to make it look again. The importer's bulk upsert resolves the same
-- three sources with set-based joins and says so with `SET LOCAL tickets.geom_resolved = on`
-- (the WHEN clause then skips the per-row trigger, which would cost more than the rest of
-- the upsert).
CREATE FUNCTION tickets.inc_resolve_geom() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_loc  text := nullif(btrim(NEW.raw ->> 'location_name'), '');
    v_cl   text := nullif(btrim(NEW.raw ->> 'cluster'), '');
    v_geom geometry := tickets.feed_point(NEW.raw);
BEGIN
    IF v_geom IS NOT NULL THEN
        NEW.geom := v_geom;
        NEW.geo_source := 'feed';
        RETURN NEW;
    END IF;
    IF v_loc IS NOT NULL THEN
        SELECT g.geom INTO v_geom FROM tickets.geo_locations g
         WHERE g.location_name = v_loc AND g.cluster = coalesce(v_cl, '') AND g.status = 'ok';
        IF v_geom IS NOT NULL THEN
            NEW.geom := v_geom;
            NEW.geo_source := 'location';
            RETURN NEW;
        END IF;
    END IF;
    IF v_cl IS NOT NULL THEN
        SELECT c.geom INTO v_geom FROM tickets.geo_clusters c WHERE c.cluster = v_cl AND c.status = 'ok';
        IF v_geom IS NOT NULL THEN
            NEW.geom := v_geom;
            NEW.geo_source := 'cluster';
            RETURN NEW;
        END IF;
    END IF;
    NEW.geom := NULL;
    NEW.geo_source := NULL;
    RETURN NEW;
END
$$;

CREATE TRIGGER inc_resolve_geom
    BEFORE INSERT OR UPDATE OF raw, geom ON tickets.inc
    FOR EACH ROW
    WHEN (current_setting('tickets.geom_resolved', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION tickets.inc_resolve_geom();

-- Import bookkeeping: watermark and freshness per feed -------------------------------------
CREATE TABLE tickets.import_meta (
    feed                text PRIMARY KEY,          -- 'inc' (CRQ later reuses the machinery)
    source_max_key      text,                      -- newest change-file key committed
    last_import_at      timestamptz,               -- last --apply run that committed a file
    last_run_at         timestamptz,               -- last --apply run, files or not
    last_file_rows      integer,
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
COMMENT ON COLUMN tickets.import_meta.source_max_key IS
    'Watermark: change files with a key <= this are committed; --from-bucket only imports newer ones.';
