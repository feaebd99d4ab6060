-- 0501 · Fuel schema `fuel`: WhatsApp fuel-fill records imported from S3 (seed 004, fleetfuel).
-- Raw first: each row is the source `id` + the full source record (`raw jsonb`); every typed
-- column is derived from `raw` by the trigger `fuel.records_derive`, through the normalisers
-- below, which are the single source of truth for the messy feed (`KCA 542Q` vs `KCA542Q`,
-- `DISIEL`, ~30 department spellings). Soft-deleted rows stay; the reporting views skip them.
-- Read views (`reporting.v_fuel_*`) live in the repeatable R__fuel_reporting.sql.

CREATE SCHEMA IF NOT EXISTS fuel;
COMMENT ON SCHEMA fuel IS 'Fuel fills from the WhatsApp fuel-record feed (import_fuel.py); read through reporting.v_fuel_*.';

-- ── Parsing helpers (never raise: a bad value becomes NULL, `raw` keeps the original) ─────────

-- First non-empty, non-"null"-like text value among `keys` of a JSON object.
CREATE FUNCTION fuel.raw_text(raw jsonb, keys text[]) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT v
    FROM unnest(keys) WITH ORDINALITY AS k(key, ord)
    CROSS JOIN LATERAL (SELECT btrim(raw ->> k.key) AS v) AS t
    WHERE t.v IS NOT NULL
      AND lower(t.v) NOT IN ('', 'null', 'none', 'nan', 'undefined', 'n/a')
    ORDER BY k.ord
    LIMIT 1
$$;

-- A number as typed on WhatsApp: `5,000`, `KES 4500`, `45.5 L`, `120,345 km`. NULL otherwise.
-- import_fuel.parse_number implements the same rules (a test checks they agree).
CREATE FUNCTION fuel.to_num(value text) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    t text := upper(btrim(coalesce(value, '')));
BEGIN
    t := regexp_replace(t, '^(KES|KSHS|KSH|SHS|SH)\.?\s*', '');
    t := regexp_replace(t, '\s*(LITRES|LITERS|LTRS|LTR|LT|L|KMS|KM)\.?$', '');
    t := replace(replace(t, ',', ''), ' ', '');
    IF t ~ '^-?[0-9]+(\.[0-9]+)?$' AND length(t) <= 30 THEN
        RETURN t::numeric;
    END IF;
    RETURN NULL;
END;
$$;

-- A source timestamp: ISO-8601 with offset/Z as given; naive values are East Africa Time
-- (the feed is written in Nairobi/Kampala, both UTC+3); unix seconds/ms accepted. NULL otherwise.
CREATE FUNCTION fuel.to_ts(value text) RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    t text := btrim(coalesce(value, ''));
BEGIN
    IF t = '' THEN
        RETURN NULL;
    END IF;
    IF t ~ '^[0-9]{9,13}(\.[0-9]+)?$' THEN
        RETURN to_timestamp(CASE WHEN t::numeric > 1e11 THEN t::numeric / 1000 ELSE t::numeric END);
    END IF;
    IF t ~* '(z|[+-][0-9]{2}(:?[0-9]{2})?)$' AND t ~ '[T ][0-9]{1,2}:' THEN
        RETURN t::timestamptz;
    END IF;
    RETURN t::timestamp AT TIME ZONE 'Africa/Nairobi';
EXCEPTION WHEN others THEN
    RETURN NULL;
END;
$$;

-- ── Normalisers ───────────────────────────────────────────────────────────────────────────

-- Plate key for joins: upper-case letters and digits (`KCA 542Q` = `kca-542q` = `KCA542Q`);
-- when the text is not plate-shaped (`KCA 542Q (Probox)`), the embedded plate is taken.
CREATE FUNCTION fuel.norm_plate(p text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN s.k IS NULL THEN NULL
        WHEN s.k ~ '^[A-Z]{1,4}[0-9]{1,4}[A-Z]{0,2}$' THEN s.k
        ELSE coalesce(
            (SELECT m[1] || m[2] || m[3]
             FROM regexp_match(upper(p), '\m([A-Z]{2,4})\s*-?\s*([0-9]{3,4})\s*-?\s*([A-Z]?)\M') AS m),
            s.k)
    END
    FROM (SELECT nullif(upper(regexp_replace(coalesce(p, ''), '[^0-9A-Za-z]', '', 'g')), '') AS k) AS s
$$;

-- Canonical fuel type: DIESEL / PETROL / KEROSENE; typos and local names folded
-- (`DISIEL`, `Deisel`, `AGO` → DIESEL; `Petro`, `PMS`, `Super`, `V-Power` → PETROL).
-- Anything else is returned upper-cased and alphanumeric, so it shows up in reports to fix.
CREATE FUNCTION fuel.canon_fuel_type(t text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN s.k IS NULL THEN NULL
        WHEN s.k ~ '^(AGO|DSL|DIESL|D[IEAY]{1,3}[SZC]{1,2}[IEAY]{0,3}L)' OR s.k ~ 'DIESEL|DISEL'
            THEN 'DIESEL'
        WHEN s.k ~ '^(PMS|SUPER|UNLEADED|GASOLINE|PETR|PTR|PETOL|PERTOL|PATROL|VPOWER|ULP)'
            THEN 'PETROL'
        WHEN s.k ~ '^(DPK|KERO|PARAFFIN|PARAFIN)' THEN 'KEROSENE'
        ELSE s.k
    END
    FROM (SELECT nullif(upper(regexp_replace(coalesce(t, ''), '[^0-9A-Za-z]', '', 'g')), '') AS k) AS s
$$;

-- Lookup key of a department spelling: upper-case letters and digits only.
CREATE FUNCTION fuel.dept_key(t text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT nullif(upper(regexp_replace(coalesce(t, ''), '[^0-9A-Za-z]', '', 'g')), '')
$$;

-- Department spellings → canonical names. Operators extend it with one INSERT per spelling:
--   INSERT INTO fuel.department_map (alias, department) VALUES ('Feild Ops', 'Field Operations');
-- (case, spaces and punctuation are ignored, so 'FIELD-OPS' and 'field ops' need no row).
-- Existing records are re-derived automatically when the map changes.
CREATE TABLE fuel.department_map (
    alias_key   text GENERATED ALWAYS AS (fuel.dept_key(alias)) STORED PRIMARY KEY,
    alias       text NOT NULL,
    department  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE fuel.department_map IS 'Operator-extensible map of department spellings to canonical names (fuel.canon_department).';

INSERT INTO fuel.department_map (alias, department) VALUES
    ('Field Operations', 'Field Operations'), ('Field Ops', 'Field Operations'),
    ('Field Operation', 'Field Operations'), ('Feild Operations', 'Field Operations'),
    ('Feild Ops', 'Field Operations'), ('Fld Ops', 'Field Operations'), ('Field', 'Field Operations'),
    ('Installations', 'Installations'), ('Installation', 'Installations'),
    ('Instalations', 'Installations'), ('Instalation', 'Installations'), ('Installs', 'Installations'),
    ('Maintenance', 'Maintenance'), ('Maintainance', 'Maintenance'), ('Maintenace', 'Maintenance'),
    ('Mantainance', 'Maintenance'), ('Repairs & Maintenance', 'Maintenance'), ('Repairs', 'Maintenance'),
    ('Outside Plant', 'Outside Plant'), ('OSP', 'Outside Plant'), ('External Plant', 'Outside Plant'),
    ('Network Operations', 'Network Operations'), ('NOC', 'Network Operations'),
    ('Network', 'Network Operations'), ('Networks', 'Network Operations'),
    ('Logistics', 'Logistics'), ('Logistic', 'Logistics'), ('Logistcs', 'Logistics'),
    ('Logistics Department', 'Logistics'), ('Transport', 'Logistics'), ('Fleet', 'Logistics'),
    ('Sales', 'Sales'), ('Sale', 'Sales'), ('Sales & Marketing', 'Sales'), ('Marketing', 'Sales'),
    ('Customer Service', 'Customer Service'), ('Customer Care', 'Customer Service'),
    ('Cust Service', 'Customer Service'), ('CS', 'Customer Service'),
    ('Administration', 'Administration'), ('Admin', 'Administration'),
    ('Adminstration', 'Administration'), ('Management', 'Management'), ('Mgmt', 'Management'),
    ('Security', 'Security'), ('Stores', 'Stores'), ('Store', 'Stores'), ('Warehouse', 'Stores'),
    ('Human Resources', 'Human Resources'), ('HR', 'Human Resources'),
    ('Human Resource', 'Human Resources'), ('Finance', 'Finance'), ('Accounts', 'Finance');

-- Canonical department: the mapped name, else the spelling tidied (trimmed, single spaces,
-- Initial Caps) so an unmapped department is still readable and visible in
-- fuel.v_unmapped_departments.
CREATE FUNCTION fuel.canon_department(t text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN fuel.dept_key(t) IS NULL THEN NULL
        ELSE coalesce(
            (SELECT m.department FROM fuel.department_map AS m WHERE m.alias_key = fuel.dept_key(t)),
            initcap(btrim(regexp_replace(t, '\s+', ' ', 'g'))))
    END
$$;

-- ── Records ───────────────────────────────────────────────────────────────────────────────

CREATE TABLE fuel.records (
    id                  text PRIMARY KEY,          -- the source primary key (as text)
    raw                 jsonb NOT NULL,            -- the source record, unchanged
    -- derived from raw by fuel.records_derive (never written directly):
    plate_raw           text,
    plate_norm          text,
    litres              numeric(10,2),
    amount_kes          numeric(14,2),
    price_per_litre_kes numeric(10,2),
    odometer_km         numeric(12,1),
    fuel_type_raw       text,
    fuel_type           text,
    driver              text,
    department_raw      text,
    department_key      text,
    department          text,
    department_mapped   boolean NOT NULL DEFAULT false,
    filled_at           timestamptz,
    src_created_at      timestamptz,
    src_updated_at      timestamptz,               -- guards against out-of-order deltas
    deleted_at          timestamptz,               -- soft delete (kept, excluded by views)
    parse_issues        text[] NOT NULL DEFAULT '{}',
    -- written by the importer:
    missing_since       timestamptz,               -- absent from the latest snapshot
    source_key          text,                      -- S3 key / file that last wrote the row
    first_seen_at       timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX records_plate_time_idx ON fuel.records (plate_norm, filled_at);
CREATE INDEX records_filled_at_idx ON fuel.records (filled_at DESC);
CREATE INDEX records_department_key_idx ON fuel.records (department_key);
COMMENT ON TABLE fuel.records IS 'One row per source fuel record (id); typed columns derived from raw by trigger.';

CREATE FUNCTION fuel.records_derive() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r jsonb := NEW.raw;
    v_litres text := fuel.raw_text(r, ARRAY['litres', 'liters', 'litre', 'quantity', 'volume']);
    v_amount text := fuel.raw_text(r, ARRAY['amount', 'amount_kes', 'cost', 'total', 'price']);
    v_odo text := fuel.raw_text(r, ARRAY['odometer', 'odometer_km', 'mileage', 'odo', 'km_reading']);
    v_time text := fuel.raw_text(r, ARRAY['filled_at', 'fill_time', 'fuel_date', 'fueled_at',
                                         'fuelled_at', 'date_time', 'datetime', 'date', 'created_at']);
    v_op text := lower(coalesce(fuel.raw_text(r, ARRAY['op', '_op', 'operation', 'action']), ''));
    issues text[] := '{}';
BEGIN
    NEW.plate_raw := fuel.raw_text(r, ARRAY['car', 'plate', 'vehicle', 'vehicle_number', 'reg_no']);
    NEW.plate_norm := fuel.norm_plate(NEW.plate_raw);
    NEW.litres := fuel.to_num(v_litres);
    NEW.amount_kes := fuel.to_num(v_amount);
    NEW.odometer_km := fuel.to_num(v_odo);
    NEW.price_per_litre_kes := CASE WHEN NEW.litres > 0 AND NEW.amount_kes IS NOT NULL
                                    THEN round(NEW.amount_kes / NEW.litres, 2) END;
    NEW.fuel_type_raw := fuel.raw_text(r, ARRAY['fuel_type', 'fueltype', 'fuel', 'type']);
    NEW.fuel_type := fuel.canon_fuel_type(NEW.fuel_type_raw);
    NEW.driver := initcap(btrim(regexp_replace(
        fuel.raw_text(r, ARRAY['driver', 'driver_name', 'driven_by']), '\s+', ' ', 'g')));
    NEW.department_raw := fuel.raw_text(r, ARRAY['department', 'dept', 'department_name']);
    NEW.department_key := fuel.dept_key(NEW.department_raw);
    NEW.department := fuel.canon_department(NEW.department_raw);
    NEW.department_mapped := EXISTS (SELECT 1 FROM fuel.department_map AS m
                                     WHERE m.alias_key = NEW.department_key);
    NEW.filled_at := fuel.to_ts(v_time);
    NEW.src_created_at := fuel.to_ts(fuel.raw_text(r, ARRAY['created_at', 'createdAt']));
    NEW.src_updated_at := fuel.to_ts(fuel.raw_text(r, ARRAY['updated_at', 'updatedAt', 'modified_at']));
    NEW.deleted_at := fuel.to_ts(fuel.raw_text(r, ARRAY['deleted_at', 'deletedAt']));
    IF NEW.deleted_at IS NULL AND v_op IN ('delete', 'deleted', 'd', 'remove', 'removed') THEN
        NEW.deleted_at := coalesce(NEW.src_updated_at, now());
    END IF;
    IF v_litres IS NOT NULL AND NEW.litres IS NULL THEN issues := array_append(issues, 'litres_unparsable'); END IF;
    IF v_amount IS NOT NULL AND NEW.amount_kes IS NULL THEN issues := array_append(issues, 'amount_unparsable'); END IF;
    IF v_odo IS NOT NULL AND NEW.odometer_km IS NULL THEN issues := array_append(issues, 'odometer_unparsable'); END IF;
    IF v_time IS NOT NULL AND NEW.filled_at IS NULL THEN issues := array_append(issues, 'fill_time_unparsable'); END IF;
    IF NEW.plate_norm IS NULL THEN issues := array_append(issues, 'plate_missing'); END IF;
    IF NEW.fuel_type NOT IN ('DIESEL', 'PETROL', 'KEROSENE') THEN issues := array_append(issues, 'fuel_type_unknown'); END IF;
    IF NEW.department_key IS NOT NULL AND NOT NEW.department_mapped THEN
        issues := array_append(issues, 'department_unmapped');
    END IF;
    NEW.parse_issues := issues;
    IF TG_OP = 'UPDATE' THEN
        NEW.first_seen_at := OLD.first_seen_at;
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TRIGGER records_derive BEFORE INSERT OR UPDATE ON fuel.records
    FOR EACH ROW EXECUTE FUNCTION fuel.records_derive();

-- When an operator adds or changes a spelling, re-derive the records that use it.
CREATE FUNCTION fuel.department_map_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE fuel.records AS r SET raw = r.raw
    WHERE r.department_key IN (
        CASE WHEN TG_OP <> 'INSERT' THEN OLD.alias_key END,
        CASE WHEN TG_OP <> 'DELETE' THEN NEW.alias_key END);
    RETURN NULL;
END;
$$;

CREATE TRIGGER department_map_changed AFTER INSERT OR UPDATE OR DELETE ON fuel.department_map
    FOR EACH ROW EXECUTE FUNCTION fuel.department_map_changed();

CREATE VIEW fuel.v_unmapped_departments AS
SELECT department_raw, department_key, count(*) AS records, max(filled_at) AS last_fill
FROM fuel.records
WHERE department_key IS NOT NULL AND NOT department_mapped AND deleted_at IS NULL
GROUP BY department_raw, department_key;
COMMENT ON VIEW fuel.v_unmapped_departments IS 'Department spellings with no fuel.department_map row: add one per line here.';

-- ── Import bookkeeping ────────────────────────────────────────────────────────────────────

-- CDC watermark per feed ('changes': highest delta key applied; 'snapshot': last reconcile).
CREATE TABLE fuel.ingest_state (
    feed            text PRIMARY KEY,
    watermark_key   text,
    last_etag       text,
    last_run_at     timestamptz,
    detail          jsonb,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Every S3 object applied, so a late-arriving delta (a key below the watermark) is still
-- picked up once and an already-applied one is not re-read.
CREATE TABLE fuel.ingest_files (
    object_key      text PRIMARY KEY,
    etag            text,
    kind            text NOT NULL,             -- snapshot | changes | file
    records         integer NOT NULL,
    bad             integer NOT NULL,
    inserted        integer NOT NULL,
    updated         integer NOT NULL,
    processed_at    timestamptz NOT NULL DEFAULT now()
);

-- Records that could not be imported (kept raw, with the reason; raw is never lost).
CREATE TABLE fuel.rejects (
    source_key      text NOT NULL,
    record_index    integer NOT NULL,
    record_id       text,
    reason          text NOT NULL,
    raw             jsonb,
    seen_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_key, record_index)
);
