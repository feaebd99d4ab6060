"""Introspection of both databases and the copy plan (pure), plus the dry-run report text.

Columns are matched by name through information_schema on both sides; nothing here knows the
old layout. `plan_table` and `render_report` are pure; `read_catalog` / `table_stats` do I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from legacy.rules import NUMERIC, norm, rules_for

Conn = psycopg.Connection[tuple[Any, ...]]

SCHEMA = "tracksolid"
# Tables of the new stack's own bookkeeping: never filled from the old database.
NOT_COPIED = {
    "schema_migrations": "migration ledger of the previous generation (kept in the old database)",
    "legacy_extra": "adoption side table",
    "legacy_adoption": "adoption progress table",
}
# What becomes of the previous generation's roles (seed 000 §3). Passwords never move: the new
# stack's roles get theirs from the environment (run_migrations.py).
ROLES = {
    "tracksolid_owner": "the app: created by run_migrations.py (TRACKSOLID_OWNER_PASSWORD)",
    "dashboard_ro": "read-only on reporting: created by run_migrations.py (DASHBOARD_RO_PASSWORD)",
    "grafana_ro": "legacy, unused by any service: not created (docs/operations.md §10 if needed)",
}
# Registry first: its rows are what the history refers to.
FIRST = ("devices",)
INT_TYPES = ("smallint", "integer", "bigint")
NUM_TYPES = (*INT_TYPES, "numeric", "real", "double precision")
TEXT_TYPES = ("text", "character varying", "character")


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # information_schema data_type (udt_name for USER-DEFINED)
    sql_type: str  # format_type(): what to cast to
    required: bool = False  # NOT NULL without default (new side)
    generated: bool = False  # generated or identity ALWAYS: cannot be inserted


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()  # natural key: primary key, else first unique constraint

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


@dataclass(frozen=True)
class TablePlan:
    """What to copy from one old table into its namesake in the new schema."""

    name: str
    copy: tuple[Column, ...]  # new-side columns filled from the same-named old column
    extra: tuple[tuple[str, str], ...]  # (old column, reason) kept in legacy_extra
    fill: tuple[str, ...]  # required new columns absent on the old side: set to 'legacy'
    key: tuple[str, ...]
    time_column: str | None  # history tables are copied in time-ordered batches
    problem: str | None = None  # set when the table cannot be copied at all
    # (new column, old column, SQL over the old column, why) where the names or units differ
    sources: tuple[tuple[str, str, str, str], ...] = ()

    def old_expr(self, name: str) -> sql.Composable:
        """The old-side SQL for new column `name` (its namesake unless a rule renamed it)."""
        for new, old, expr, _ in self.sources:
            if new == name:
                return sql.SQL(expr).format(sql.Identifier(old))
        return sql.Identifier(name)


@dataclass
class Stats:
    rows: int
    tmin: datetime | None = None
    tmax: datetime | None = None


@dataclass
class Inspection:
    old_schemas: list[str]
    old: dict[str, Table]
    new: dict[str, Table]
    plans: list[TablePlan]
    skipped: list[tuple[str, str]]  # (qualified old table, reason)
    stats: dict[str, Stats] = field(default_factory=dict)
    roles: list[tuple[str, bool]] = field(default_factory=list)  # (old role, can log in)


def compatible(old: str, new: str) -> bool:
    """True when a value of type `old` converts to `new` without loss or failure."""
    if old == new:
        return True
    if new in TEXT_TYPES and old in TEXT_TYPES:
        return True
    if old in INT_TYPES and new in NUM_TYPES:
        return NUM_TYPES.index(new) >= NUM_TYPES.index(old)
    if old in ("numeric", "real") and new in ("numeric", "double precision"):
        return old == "real" or new == "numeric"
    return old == "timestamp without time zone" and new == "timestamp with time zone"


def plan_table(old: Table, new: Table | None) -> TablePlan:
    """Match the columns of one old table with its namesake in the new schema."""
    if new is None:
        return TablePlan(old.name, (), (), (), (), None, "no such table in the new schema")
    copy: dict[str, Column] = {}
    sources: list[tuple[str, str, str, str]] = []
    extra: list[tuple[str, str]] = []
    pending: list[Column] = []
    for col in old.columns:  # 1. same name
        target = new.column(col.name)
        if target is None:
            pending.append(col)
        elif target.generated:
            extra.append((col.name, "generated/identity in the new schema (recomputed)"))
        elif not compatible(col.type, target.type):
            extra.append((col.name, f"type {col.type} does not convert to {target.type}"))
        else:
            copy[target.name] = target
    for col in pending:  # 2. a known rule, 3. the same name ignoring case and underscores
        mapped = _by_rule(col, new, copy) or _by_spelling(col, new, copy)
        if isinstance(mapped, str):
            extra.append((col.name, mapped))
        else:
            into, expr, why = mapped
            copy[into.name] = into
            sources.append((into.name, col.name, expr, why))
    copy = {c.name: c for c in new.columns if c.name in copy}  # the new table's column order
    position = {c.name: i for i, c in enumerate(old.columns)}
    extra.sort(key=lambda e: position[e[0]])  # the old table's column order
    names = set(copy)
    fill = tuple(
        c.name for c in new.columns if c.required and c.name not in names and not c.generated
    )
    key = new.key
    missing_key = [k for k in key if k not in names]
    time_col = next(
        (k for k in key if (c := new.column(k)) is not None and c.type.startswith("timestamp")),
        None,
    )
    problem = None
    not_text = [n for n in fill if (c := new.column(n)) is not None and c.type not in TEXT_TYPES]
    if not_text:
        problem = f"required column(s) {', '.join(not_text)} have no value in the old table"
    elif not key:
        problem = "no natural key in the new schema (duplicates could not be prevented)"
    elif missing_key:
        problem = f"natural key column(s) {', '.join(missing_key)} missing or unconvertible"
    return TablePlan(
        old.name, tuple(copy.values()), tuple(extra), fill, key, time_col, problem, tuple(sources)
    )


Mapped = tuple[Column, str, str] | str  # (target, SQL over the old column, why) or a reason


def _by_rule(col: Column, new: Table, taken: dict[str, Column]) -> Mapped | None:
    for rule in rules_for(new.name):
        if norm(col.name) not in rule.old or (target := new.column(rule.new)) is None:
            continue
        if target.name in taken:
            return f"{rule.why}; {target.name} is already filled from another old column"
        if rule.numeric and col.type not in NUMERIC:
            return f"rule for {target.name} needs a number, the old column is {col.type}"
        if rule.expr == "{}" and not compatible(col.type, target.type):
            return f"type {col.type} does not convert to {target.type}"
        return target, rule.expr, rule.why
    return None


def _by_spelling(col: Column, new: Table, taken: dict[str, Column]) -> Mapped:
    same = [c for c in new.columns if norm(c.name) == norm(col.name)]
    if len(same) != 1:
        return "no such column in the new schema"
    target = same[0]
    if target.name in taken or target.generated:
        return f"{target.name} is already filled (or generated) in the new schema"
    if not compatible(col.type, target.type):
        return f"type {col.type} does not convert to {target.type}"
    return target, "{}", "same name ignoring case and underscores"


def order_plans(plans: list[TablePlan]) -> list[TablePlan]:
    """Registry first, then the other tables without a time column, then history by name."""

    def rank(p: TablePlan) -> tuple[int, str]:
        if p.name in FIRST:
            return (0, p.name)
        return (1 if p.time_column is None else 2, p.name)

    return sorted(plans, key=rank)


_COLUMNS = """
SELECT c.table_schema, c.table_name, c.column_name,
       CASE WHEN c.data_type = 'USER-DEFINED' THEN c.udt_name ELSE c.data_type END,
       format_type(a.atttypid, a.atttypmod),
       c.is_nullable = 'NO' AND c.column_default IS NULL AND c.is_identity = 'NO'
           AND c.is_generated = 'NEVER',
       c.is_generated <> 'NEVER' OR c.identity_generation = 'ALWAYS'
FROM information_schema.columns c
JOIN information_schema.tables t USING (table_schema, table_name)
JOIN pg_attribute a ON a.attrelid = format('%I.%I', c.table_schema, c.table_name)::regclass
                   AND a.attname = c.column_name
WHERE t.table_type = 'BASE TABLE'
  AND c.table_schema NOT IN ('pg_catalog', 'information_schema')
  AND c.table_schema NOT LIKE '\\_timescaledb%' AND c.table_schema NOT LIKE 'timescaledb%'
  AND c.table_schema NOT IN ('topology', 'tiger', 'tiger_data')
  -- tables owned by an extension (PostGIS's spatial_ref_sys) come with the extension
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = a.attrelid AND d.deptype = 'e')
ORDER BY 1, 2, c.ordinal_position
"""

_KEYS = """
SELECT tc.table_schema, tc.table_name, tc.constraint_type,
       array_agg(k.column_name::text ORDER BY k.ordinal_position)
FROM information_schema.table_constraints tc
JOIN information_schema.key_column_usage k USING (constraint_schema, constraint_name)
WHERE tc.constraint_type IN ('PRIMARY KEY', 'UNIQUE') AND tc.table_schema = %s
GROUP BY tc.table_schema, tc.table_name, tc.constraint_type, tc.constraint_name
ORDER BY tc.table_name, tc.constraint_type, tc.constraint_name
"""


def read_catalog(conn: Conn) -> dict[str, Table]:
    """Every base table of the database, by `schema.table`, with its natural key."""
    cols: dict[str, list[Column]] = {}
    for schema, table, name, typ, sql_type, required, generated in conn.execute(_COLUMNS):
        cols.setdefault(f"{schema}.{table}", []).append(
            Column(name, typ, sql_type, bool(required), bool(generated))
        )
    tables = {q: Table(q.split(".", 1)[0], q.split(".", 1)[1], tuple(c)) for q, c in cols.items()}
    keys: dict[str, tuple[str, ...]] = {}
    for schema, table, _kind, columns in conn.execute(_KEYS, (SCHEMA,)):
        q = f"{schema}.{table}"
        t = tables.get(q)
        if q in keys or t is None:
            continue
        # A key made only of an identity column is no natural key: it is renumbered.
        if all((c := t.column(n)) is not None and c.generated for n in columns):
            continue
        keys[q] = tuple(columns)
    return {q: Table(t.schema, t.name, t.columns, keys.get(q, ())) for q, t in tables.items()}


def inspect(old: Conn, new_catalog: dict[str, Table]) -> Inspection:
    """Read the old catalog, plan every `tracksolid` table, list what is left behind."""
    old_tables = read_catalog(old)
    schemas = [
        r[0]
        for r in old.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname !~ '^(pg_|_timescaledb|timescaledb)'"
            " AND nspname NOT IN ('information_schema', 'topology') ORDER BY 1"
        )
    ]
    plans: list[TablePlan] = []
    skipped: list[tuple[str, str]] = []
    for q, table in sorted(old_tables.items()):
        if table.schema != SCHEMA:
            skipped.append((q, f"schema {table.schema} is not part of the new stack"))
        elif table.name in NOT_COPIED:
            skipped.append((q, NOT_COPIED[table.name]))
        else:
            plan = plan_table(table, new_catalog.get(q))
            if plan.problem:
                skipped.append((q, plan.problem))
            else:
                plans.append(plan)
    result = Inspection(schemas, old_tables, new_catalog, order_plans(plans), skipped)
    result.roles = [
        (r[0], r[1])
        for r in old.execute(
            "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname !~ '^pg_'"
            " AND NOT rolsuper ORDER BY 1"
        )
    ]
    for q, table in old_tables.items():
        match = next((p for p in plans if f"{SCHEMA}.{p.name}" == q), None)
        when = match.old_expr(match.time_column) if match and match.time_column else None
        result.stats[q] = table_stats(old, table, when)
    return result


def table_stats(conn: Conn, table: Table, when: sql.Composable | None) -> Stats:
    """Row count (and time range of the expression `when`, if given) of one table."""
    ident = sql.Identifier(table.schema, table.name)
    if when is None:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()
        return Stats(int(row[0]) if row else 0)
    query = sql.SQL("SELECT count(*), min({t}), max({t}) FROM {i}").format(t=when, i=ident)
    row = conn.execute(query).fetchone()
    return Stats(int(row[0]), row[1], row[2]) if row else Stats(0)


def render_report(ins: Inspection) -> str:
    """The dry-run report: what the old database holds, what goes where, what cannot."""
    out = [f"Old database schemas: {', '.join(ins.old_schemas)}", "", "Old tables:"]
    for q, table in sorted(ins.old.items()):
        st = ins.stats.get(q, Stats(0))
        span = f"  {st.tmin} .. {st.tmax}" if st.tmin is not None else ""
        out.append(f"  {q}: {st.rows} rows{span}")
        out.append("      " + ", ".join(f"{c.name} {c.type}" for c in table.columns))
    out += ["", "Copy plan (in this order):"]
    for p in ins.plans:
        how = f"batched by {p.time_column}" if p.time_column else "in one pass"
        out.append(
            f"  {SCHEMA}.{p.name} -> {SCHEMA}.{p.name} ({how}, key {', '.join(p.key)}): "
            f"{len(p.copy)} columns"
        )
        for new, old, expr, why in p.sources:
            how_expr = "" if expr == "{}" else f" as {expr.format(old)}"
            out.append(f"      RENAMED {p.name}.{old} -> {new}{how_expr}: {why}")
        for name, reason in p.extra:
            out.append(f"      UNMAPPED {p.name}.{name}: {reason} -> kept in legacy_extra")
        for name in p.fill:
            out.append(f"      FILLED {p.name}.{name}: required, absent in old -> 'legacy'")
    out += ["", "Roles of the old database:"]
    for name, login in ins.roles:
        fate = ROLES.get(name, "not created by the new stack (grant it yourself if needed)")
        out.append(f"  {name}{' (login)' if login else ''}: {fate}")
    out += ["", "Not copied:"]
    out += [f"  {q}: {reason}" for q, reason in ins.skipped] or ["  (nothing)"]
    return "\n".join(out)
