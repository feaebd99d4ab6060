"""Apply `migrations/*.sql` in order, once each, with a checksum ledger and an advisory lock.

Usage:
    DATABASE_URL=postgresql://... python run_migrations.py            # apply pending files
    DATABASE_URL=postgresql://... python run_migrations.py --status   # list applied / pending

Conventions (see migrations/README.md):
- `NNNN_name.sql` — versioned, forward-only. Applied once; editing it afterwards is refused
  (exit code 2, the file is named) because its checksum no longer matches the ledger.
- `R__name.sql` — repeatable (views, functions, policies written with CREATE OR REPLACE):
  re-applied after the versioned files whenever its checksum changes.
- Header directives (comment lines at the top of a file):
    `-- migrate: no-transaction`                 statements run one by one in autocommit
                                                 (TimescaleDB continuous aggregates need it)
    `-- migrate: requires-extension NAME`        skipped when NAME is unavailable
    `-- migrate: requires-no-extension NAME`     skipped when NAME is available (the fallback)
  A skipped file is recorded as `skipped`, so the variant chosen at first start is pinned.
- The whole run holds a PostgreSQL advisory lock: containers starting together apply each
  file once; the second one waits and then finds nothing pending.
- Roles `tracksolid_owner` (the app) and `dashboard_ro` (read-only on `reporting`) are created
  idempotently; passwords come from TRACKSOLID_OWNER_PASSWORD / DASHBOARD_RO_PASSWORD.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from ts_shared import Settings, setup_logging

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK_KEY = 7_320_262_011  # arbitrary, fixed: "the migration runner"
OWNER_ROLE = "tracksolid_owner"
READONLY_ROLE = "dashboard_ro"
APP_SCHEMAS = ("tracksolid", "reporting", "tickets", "fuel")

_DIRECTIVE = re.compile(r"^--\s*migrate:\s*(?P<key>[a-z-]+)\s*(?P<arg>\S*)\s*$")
_VERSIONED = re.compile(r"^\d{4}_[a-z0-9_]+\.sql$")
_REPEATABLE = re.compile(r"^R__[a-z0-9_]+\.sql$")


class MigrationError(Exception):
    """A migration could not be applied (the runner exits non-zero)."""


class ChangedMigrationError(MigrationError):
    """An already-applied versioned file no longer matches its recorded checksum."""


@dataclass(frozen=True)
class Migration:
    """One SQL file and what its header asks of the runner."""

    name: str
    sql: str
    repeatable: bool
    no_transaction: bool = False
    requires: tuple[str, ...] = ()
    requires_not: tuple[str, ...] = ()

    def checksum(self, params: dict[str, str]) -> str:
        """SHA-256 of the file; for repeatables also of the settings they read."""
        digest = hashlib.sha256(self.sql.encode("utf-8"))
        if self.repeatable:
            digest.update(json.dumps(params, sort_keys=True).encode())
        return digest.hexdigest()


@dataclass
class Report:
    """What a run did."""

    applied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unchanged: int = 0


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Read the directory: versioned files in name order, then repeatables in name order."""
    versioned: list[Migration] = []
    repeatable: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        name = path.name
        is_repeatable = bool(_REPEATABLE.match(name))
        if not is_repeatable and not _VERSIONED.match(name):
            raise MigrationError(f"{name}: name must be NNNN_lower_snake.sql or R__lower_snake.sql")
        text = path.read_text(encoding="utf-8")
        no_tx = False
        requires: list[str] = []
        requires_not: list[str] = []
        for line in text.splitlines():
            if not line.startswith("--"):
                break
            match = _DIRECTIVE.match(line.strip())
            if not match:
                continue
            key, arg = match["key"], match["arg"]
            if key == "no-transaction":
                no_tx = True
            elif key == "requires-extension" and arg:
                requires.append(arg)
            elif key == "requires-no-extension" and arg:
                requires_not.append(arg)
            else:
                raise MigrationError(f"{name}: unknown directive {line.strip()!r}")
        migration = Migration(
            name, text, is_repeatable, no_tx, tuple(requires), tuple(requires_not)
        )
        (repeatable if is_repeatable else versioned).append(migration)
    return versioned + repeatable


def split_statements(script: str) -> list[str]:
    """Split SQL on top-level semicolons, respecting quotes, comments and $tag$ bodies."""
    statements: list[str] = []
    buf: list[str] = []
    i, n = 0, len(script)
    while i < n:
        ch = script[i]
        if script.startswith("--", i):
            end = script.find("\n", i)
            end = n if end == -1 else end + 1
            buf.append(script[i:end])
            i = end
        elif script.startswith("/*", i):
            end = script.find("*/", i + 2)
            end = n if end == -1 else end + 2
            buf.append(script[i:end])
            i = end
        elif ch in ("'", '"'):
            end = i + 1
            while end < n:
                if script[end] == ch:
                    if end + 1 < n and script[end + 1] == ch:
                        end += 2
                        continue
                    break
                end += 1
            buf.append(script[i : end + 1])
            i = end + 1
        elif ch == "$" and (tag := re.match(r"\$[A-Za-z_]*\$", script[i:])):
            marker = tag.group(0)
            end = script.find(marker, i + len(marker))
            end = n if end == -1 else end + len(marker)
            buf.append(script[i:end])
            i = end
        elif ch == ";":
            statements.append("".join(buf).strip())
            buf = []
            i += 1
        else:
            buf.append(ch)
            i += 1
    statements.append("".join(buf).strip())
    return [s for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    stripped = re.sub(r"--[^\n]*", "", statement)
    stripped = re.sub(r"/\*.*?\*/", "", stripped, flags=re.S)
    return bool(stripped.strip())


def migration_params(settings: Settings) -> dict[str, str]:
    """Session settings (`app.*`) the SQL files may read with current_setting()."""
    return {
        "app.ts_chunk": settings.timescale_chunk_interval,
        "app.ts_compress_after": settings.timescale_compress_after,
        "app.ts_retention": settings.timescale_retention,
    }


def _ensure_ledger(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute("CREATE SCHEMA IF NOT EXISTS tracksolid")
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS tracksolid.schema_migrations (
            filename     text PRIMARY KEY,
            checksum     text NOT NULL,
            kind         text NOT NULL,          -- versioned | repeatable
            status       text NOT NULL,          -- applied | skipped
            applied_at   timestamptz NOT NULL DEFAULT now(),
            execution_ms integer
        )
        """
    )


PRELOAD_HINT = (
    "the timescaledb extension is installed but not preloaded: add"
    " shared_preload_libraries = 'timescaledb' to postgresql.conf and restart PostgreSQL"
    " (the timescale/timescaledb-ha image does this), or set USE_TIMESCALEDB=off to build"
    " the plain-PostgreSQL variant instead"
)


def timescaledb_state(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    """`usable` (created here, or installed and preloaded), `not-preloaded` (installed, but
    `CREATE EXTENSION` would end the session with a FATAL error) or `absent`."""
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
        return "usable"
    if not conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone():
        return "absent"
    try:
        row = conn.execute("SHOW shared_preload_libraries").fetchone()
        libraries = str(row[0]) if row else ""
    except psycopg.errors.InsufficientPrivilege:
        # Not allowed to read the setting: the loader defines this one when it is preloaded.
        row = conn.execute(
            "SELECT current_setting('timescaledb.bgw_launcher_poll_time', true)"
        ).fetchone()
        return "usable" if row and row[0] else "not-preloaded"
    preloaded = any(
        lib.strip().strip('"').split("/")[-1].removesuffix(".so").startswith("timescaledb")
        for lib in libraries.split(",")
    )
    return "usable" if preloaded else "not-preloaded"


def _pinned(
    ext: str, migrations: Sequence[Migration], ledger: dict[str, tuple[str, str]]
) -> bool | None:
    """The variant an earlier run chose for `ext`: True/False, or None when none was chosen.
    A file that requires `ext` applied (or its plain twin skipped) means it was used."""
    for m in migrations:
        if m.name not in ledger:
            continue
        applied = ledger[m.name][1] == "applied"
        if ext in m.requires:
            return applied
        if ext in m.requires_not:
            return not applied
    return None


def _available_extensions(
    conn: psycopg.Connection[tuple[object, ...]],
    mode: str,
    timescaledb_pinned: bool | None,
) -> set[str]:
    """Extensions the `requires-extension` directives may count on. TimescaleDB counts when an
    earlier run pinned it, else when usable (`timescaledb_state`) and `USE_TIMESCALEDB` is not
    `off`; installed-but-not-preloaded is an error, never a silent fallback."""
    rows = conn.execute("SELECT name FROM pg_available_extensions").fetchall()
    available = {str(row[0]) for row in rows}
    available.discard("timescaledb")
    if timescaledb_pinned is not None or mode == "off":
        if timescaledb_pinned:
            available.add("timescaledb")
        return available
    state = timescaledb_state(conn)
    if state == "usable":
        available.add("timescaledb")
    elif state == "not-preloaded":
        raise MigrationError(PRELOAD_HINT)
    elif mode == "on":
        raise MigrationError(
            "USE_TIMESCALEDB=on but the timescaledb extension is not installed on this server"
            " (use the timescale/timescaledb-ha image, or USE_TIMESCALEDB=off / auto)"
        )
    return available


def ensure_roles(
    conn: psycopg.Connection[tuple[object, ...]],
    owner_password: str | None,
    readonly_password: str | None,
) -> None:
    """Create the app and read-only roles if missing; set passwords when given."""
    for role, password in ((OWNER_ROLE, owner_password), (READONLY_ROLE, readonly_password)):
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if not exists:
            # A runner on another database of the same cluster may create it concurrently.
            raced = (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation)
            with contextlib.suppress(*raced):
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        if password:
            conn.execute(
                sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)
                )
            )


def apply_grants(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Owner: everything in the app schemas. Read-only: SELECT/EXECUTE in `reporting` only."""
    present = {
        str(row[0])
        for row in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", (list(APP_SCHEMAS),)
        ).fetchall()
    }
    owner = sql.Identifier(OWNER_ROLE)
    for schema in sorted(present):
        ident = sql.Identifier(schema)
        for stmt in (
            "GRANT USAGE, CREATE ON SCHEMA {s} TO {r}",
            "GRANT ALL ON ALL TABLES IN SCHEMA {s} TO {r}",
            "GRANT ALL ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
            "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {s} TO {r}",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT ALL ON TABLES TO {r}",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT ALL ON SEQUENCES TO {r}",
        ):
            conn.execute(sql.SQL(stmt).format(s=ident, r=owner))
    # Materialized views are refreshed by the app (REFRESH needs the owner): hand them over.
    matviews = conn.execute(
        "SELECT schemaname, matviewname FROM pg_matviews"
        " WHERE schemaname = ANY(%s) AND matviewowner <> %s",
        (list(present), OWNER_ROLE),
    ).fetchall()
    # So do TimescaleDB's continuous aggregates (refresh_continuous_aggregate needs the owner).
    has_caggs = conn.execute(
        "SELECT to_regclass('timescaledb_information.continuous_aggregates') IS NOT NULL"
    ).fetchone()
    if has_caggs and has_caggs[0]:
        matviews += conn.execute(
            "SELECT view_schema, view_name FROM timescaledb_information.continuous_aggregates"
            " WHERE view_schema = ANY(%s) AND view_owner::text <> %s",
            (list(present), OWNER_ROLE),
        ).fetchall()
    for mv_schema, mv_name in matviews:
        try:
            conn.execute(
                sql.SQL("ALTER MATERIALIZED VIEW {} OWNER TO {}").format(
                    sql.Identifier(str(mv_schema), str(mv_name)), owner
                )
            )
        except psycopg.errors.InsufficientPrivilege as exc:
            log.warning("cannot give %s.%s to %s: %s", mv_schema, mv_name, OWNER_ROLE, exc)
    if "reporting" in present:
        ro = sql.Identifier(READONLY_ROLE)
        rep = sql.Identifier("reporting")
        for stmt in (
            "GRANT USAGE ON SCHEMA {s} TO {r}",
            "GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {r}",
            "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {s} TO {r}",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT SELECT ON TABLES TO {r}",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT EXECUTE ON FUNCTIONS TO {r}",
        ):
            conn.execute(sql.SQL(stmt).format(s=rep, r=ro))


def migrate(
    conninfo: str,
    settings: Settings,
    *,
    directory: Path = MIGRATIONS_DIR,
    select: Callable[[str], bool] | None = None,
    manage_roles: bool = True,
) -> Report:
    """Apply every pending migration; raise `ChangedMigrationError` / `MigrationError`.

    `select` limits the run to matching file names (the TimescaleDB smoke test uses it).
    Uses exactly one connection, so it also works where only one is allowed.
    """
    migrations = [m for m in load_migrations(directory) if select is None or select(m.name)]
    params = migration_params(settings)
    report = Report()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            for key, value in params.items():
                conn.execute("SELECT set_config(%s, %s, false)", (key, value))
            conn.execute("SET client_min_messages = warning")
            _ensure_ledger(conn)
            ledger = {
                str(row[0]): (str(row[1]), str(row[2]))
                for row in conn.execute(
                    "SELECT filename, checksum, status FROM tracksolid.schema_migrations"
                ).fetchall()
            }
            # Refuse before touching anything if an applied versioned file was edited.
            changed = [
                m.name
                for m in migrations
                if not m.repeatable
                and m.name in ledger
                and ledger[m.name][1] == "applied"
                and ledger[m.name][0] != m.checksum(params)
            ]
            if changed:
                raise ChangedMigrationError(
                    "applied migration(s) changed on disk: "
                    + ", ".join(changed)
                    + " — never edit an applied file; add a new NNNN_*.sql instead"
                )
            # Probed only when a pending file depends on an extension, so a database whose
            # variant is already pinned never trips over the server's current state.
            available: set[str] | None = None
            if manage_roles:
                ensure_roles(
                    conn,
                    _secret(settings.tracksolid_owner_password),
                    _secret(settings.dashboard_ro_password),
                )
            for migration in migrations:
                checksum = migration.checksum(params)
                if migration.name in ledger and (
                    not migration.repeatable or ledger[migration.name][0] == checksum
                ):
                    report.unchanged += 1
                    continue
                if migration.name in ledger and ledger[migration.name][1] == "skipped":
                    report.unchanged += 1
                    continue
                if available is None and (migration.requires or migration.requires_not):
                    pinned = _pinned("timescaledb", migrations, ledger)
                    available = _available_extensions(conn, settings.use_timescaledb, pinned)
                skip = available is not None and (
                    any(ext not in available for ext in migration.requires)
                    or any(ext in available for ext in migration.requires_not)
                )
                _apply_one(conn, migration, checksum, skip)
                (report.skipped if skip else report.applied).append(migration.name)
            if manage_roles:
                apply_grants(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return report


def _secret(value: object) -> str | None:
    getter = getattr(value, "get_secret_value", None)
    return str(getter()) if getter else None


def _apply_one(
    conn: psycopg.Connection[tuple[object, ...]], migration: Migration, checksum: str, skip: bool
) -> None:
    started = time.monotonic()
    record = """
        INSERT INTO tracksolid.schema_migrations
            (filename, checksum, kind, status, applied_at, execution_ms)
        VALUES (%s, %s, %s, %s, now(), %s)
        ON CONFLICT (filename) DO UPDATE SET checksum = EXCLUDED.checksum,
            status = EXCLUDED.status, applied_at = now(), execution_ms = EXCLUDED.execution_ms
    """
    kind = "repeatable" if migration.repeatable else "versioned"
    try:
        if skip:
            log.info(
                "skip %s (requires %s / not %s)",
                migration.name,
                migration.requires,
                migration.requires_not,
            )
            conn.execute(record, (migration.name, checksum, kind, "skipped", 0))
            return
        if migration.no_transaction:
            for statement in split_statements(migration.sql):
                conn.execute(statement.encode("utf-8"))
            elapsed = int((time.monotonic() - started) * 1000)
            conn.execute(record, (migration.name, checksum, kind, "applied", elapsed))
        else:
            with conn.transaction():
                conn.execute(migration.sql.encode("utf-8"))
                elapsed = int((time.monotonic() - started) * 1000)
                conn.execute(record, (migration.name, checksum, kind, "applied", elapsed))
    except psycopg.Error as exc:
        raise MigrationError(f"{migration.name}: {exc}") from exc
    log.info("applied %s in %d ms", migration.name, int((time.monotonic() - started) * 1000))


def status(conninfo: str, settings: Settings, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """One line per file: applied / skipped / changed / pending."""
    params = migration_params(settings)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('tracksolid.schema_migrations')").fetchone()
        ledger: dict[str, tuple[str, str, object]] = {}
        if exists and exists[0] is not None:
            ledger = {
                str(r[0]): (str(r[1]), str(r[2]), r[3])
                for r in conn.execute(
                    "SELECT filename, checksum, status, applied_at"
                    " FROM tracksolid.schema_migrations"
                ).fetchall()
            }
    lines = []
    for m in load_migrations(directory):
        if m.name not in ledger:
            lines.append(f"pending    {m.name}")
            continue
        checksum, state, when = ledger[m.name]
        if checksum != m.checksum(params):
            state = "re-apply" if m.repeatable else "CHANGED"
        lines.append(f"{state:<10} {m.name}  {when}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--status", action="store_true", help="list applied/pending files")
    parser.add_argument("--dir", type=Path, default=MIGRATIONS_DIR, help="migrations folder")
    parser.add_argument("--no-roles", action="store_true", help="do not create roles / grants")
    args = parser.parse_args(argv)
    settings = Settings()
    setup_logging(settings.log_level)
    try:
        if args.status:
            for line in status(settings.dsn(), settings, args.dir):
                sys.stdout.write(line + "\n")
            return 0
        report = migrate(
            settings.dsn(), settings, directory=args.dir, manage_roles=not args.no_roles
        )
    except ChangedMigrationError as exc:
        log.error("%s", exc)
        return 2
    except (MigrationError, psycopg.Error) as exc:
        log.error("migration failed: %s", exc)
        return 1
    if report.applied or report.skipped:
        log.info(
            "applied %d, skipped %d (variant not available), %d already up to date",
            len(report.applied),
            len(report.skipped),
            report.unchanged,
        )
    else:
        log.info("nothing to do: all %d migrations already applied", report.unchanged)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
