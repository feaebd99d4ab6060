-- 0903 · Adopting the previous-generation database (adopt_legacy.py, issue #14).
-- legacy_extra keeps, per copied row, the old columns that have no home in this schema (never
-- dropped); legacy_adoption records how far each history table has been copied, so a killed
-- run resumes where it stopped and a second run is a catch-up pass.

CREATE TABLE IF NOT EXISTS tracksolid.legacy_extra (
    table_name  text NOT NULL,
    key         jsonb NOT NULL,
    extra       jsonb NOT NULL,
    copied_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, key)
);

CREATE TABLE IF NOT EXISTS tracksolid.legacy_adoption (
    table_name   text PRIMARY KEY,
    copied_until timestamptz,
    rows         bigint NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
