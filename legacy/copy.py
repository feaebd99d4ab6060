"""Batched, resumable copy from the old database into the new one.

Each batch streams `COPY (SELECT ...) TO STDOUT (FORMAT BINARY)` from the old database into a
temporary staging table of the new one, then `INSERT ... ON CONFLICT` on the natural key, the
unmapped columns into `tracksolid.legacy_extra` and the progress into
`tracksolid.legacy_adoption` — all in one transaction, so a killed run leaves whole batches
only and the next run starts at `copied_until` (no gap, no duplicate).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg import sql

from legacy.inspect import SCHEMA, Conn, TablePlan
from ts_shared import connect_options

log = logging.getLogger(__name__)

READ_ONLY_OPTIONS = "-c default_transaction_read_only=on"
EXTRA = "__legacy_extra"
STAGE = "legacy_stage"
# Called after each committed batch: (table, copied_until, rows in the batch). Tests raise
# from it to simulate a killed run.
BatchHook = Callable[[str, datetime | None, int], None]


@dataclass(frozen=True)
class Window:
    """One history batch [a, b) as a condition on each side (the old column may be renamed)."""

    old: sql.Composable
    new: sql.Composable

    @classmethod
    def of(cls, plan: TablePlan, a: datetime, b: datetime) -> Window:
        assert plan.time_column is not None
        cond = sql.SQL("{t} >= {a} AND {t} < {b}")
        return cls(
            cond.format(t=plan.old_expr(plan.time_column), a=sql.Literal(a), b=sql.Literal(b)),
            cond.format(t=sql.Identifier(plan.time_column), a=sql.Literal(a), b=sql.Literal(b)),
        )


class CopyError(Exception):
    """A table could not be copied (the message names it)."""


def windows(start: datetime, stop: datetime, step: timedelta) -> list[tuple[datetime, datetime]]:
    """Half-open, time-ordered windows [a, b) covering [start, stop); none when start >= stop."""
    out: list[tuple[datetime, datetime]] = []
    a = start
    while a < stop:
        b = min(a + step, stop)
        out.append((a, b))
        a = b
    return out


def select_sql(
    plan: TablePlan, where: sql.Composable | None = None, *, extra: bool = True
) -> sql.Composed:
    """Old side: the mapped columns cast to the new types, then (with `extra`) the unmapped
    ones as one JSONB value."""
    cols: list[sql.Composable] = [
        sql.SQL("({})::{}").format(plan.old_expr(c.name), sql.SQL(c.sql_type)) for c in plan.copy
    ]
    if not extra:
        pass
    elif plan.extra:
        pairs = sql.SQL(", ").join(
            sql.SQL("{}, {}").format(sql.Literal(name), sql.Identifier(name))
            for name, _ in plan.extra
        )
        cols.append(sql.SQL("jsonb_strip_nulls(jsonb_build_object({}))").format(pairs))
    else:
        cols.append(sql.SQL("'{}'::jsonb"))
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(cols), sql.Identifier(SCHEMA, plan.name)
    )
    return query if where is None else sql.SQL("{} WHERE {}").format(query, where)


def staging_sql(plan: TablePlan) -> sql.Composed:
    """New side: a temporary table with exactly the columns `select_sql` sends."""
    cols = [sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.sql_type)) for c in plan.copy]
    cols.append(sql.SQL("{} jsonb").format(sql.Identifier(EXTRA)))
    return sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
        sql.Identifier(STAGE), sql.SQL(", ").join(cols)
    )


def insert_sql(plan: TablePlan) -> sql.Composed:
    """History: DO NOTHING (first copy wins); registry: DO UPDATE (a catch-up refreshes it)."""
    names = [c.name for c in plan.copy]
    target = [sql.Identifier(n) for n in (*names, *plan.fill)]
    values = [sql.Identifier(n) for n in names] + [sql.Literal("legacy") for _ in plan.fill]
    key = sql.SQL(", ").join(sql.Identifier(k) for k in plan.key)
    conflict: sql.Composable
    if plan.time_column is not None:
        conflict = sql.SQL("ON CONFLICT DO NOTHING")
    else:
        updates = [n for n in names if n not in plan.key]
        conflict = sql.SQL("ON CONFLICT ({}) DO UPDATE SET {}").format(
            key,
            sql.SQL(", ").join(
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in updates
            )
            if updates
            else sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(plan.key[0])),
        )
    return sql.SQL("INSERT INTO {t} ({c}) SELECT DISTINCT ON ({k}) {v} FROM {s} {x}").format(
        t=sql.Identifier(SCHEMA, plan.name),
        c=sql.SQL(", ").join(target),
        k=key,
        v=sql.SQL(", ").join(values),
        s=sql.Identifier(STAGE),
        x=conflict,
    )


def extra_sql(plan: TablePlan) -> sql.Composed:
    """The unmapped old columns of the staged rows into legacy_extra, keyed by the natural key."""
    key = sql.SQL(", ").join(
        sql.SQL("{}, {}").format(sql.Literal(k), sql.Identifier(k)) for k in plan.key
    )
    return sql.SQL(
        "INSERT INTO tracksolid.legacy_extra (table_name, key, extra) "
        "SELECT {n}, jsonb_build_object({k}), {e} FROM {s} WHERE {e} <> '{{}}'::jsonb "
        "ON CONFLICT (table_name, key) DO UPDATE SET extra = EXCLUDED.extra"
    ).format(n=sql.Literal(plan.name), k=key, e=sql.Identifier(EXTRA), s=sql.Identifier(STAGE))


def open_old(url: str) -> Conn:
    """A connection to the old database in which every transaction is read-only."""
    return psycopg.connect(url, autocommit=True, options=connect_options(url, READ_ONLY_OPTIONS))


def copied_until(new: Conn, table: str) -> datetime | None:
    """How far `table` has been copied by an earlier run (None: not yet)."""
    row = new.execute(
        "SELECT copied_until FROM tracksolid.legacy_adoption WHERE table_name = %s", (table,)
    ).fetchone()
    return row[0] if row else None


def _stream(old: Conn, new: Conn, select: sql.Composable, into: sql.Composable) -> int:
    """One binary COPY from the old database into `into` (a table and column list) of the new;
    returns the rows written."""
    copy_out = sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(select)
    copy_in = sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(into)
    with old.cursor() as out_cur, new.cursor() as in_cur:
        with out_cur.copy(copy_out) as src, in_cur.copy(copy_in) as dst:
            for data in src:
                dst.write(data)
        return max(in_cur.rowcount, 0)


def _window_empty(new: Conn, plan: TablePlan, where: sql.Composable) -> bool:  # new side
    """True when the target holds no row of this window yet (first copy, or resumed past it)."""
    row = new.execute(
        sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {} WHERE {})").format(
            sql.Identifier(SCHEMA, plan.name), where
        )
    ).fetchone()
    return bool(row and row[0])


def _direct(old: Conn, new: Conn, plan: TablePlan, window: Window) -> int | None:
    """COPY a window straight into the target table when nothing can conflict; None if not.

    The fast path (about raw COPY speed): taken when the window is empty in the target and
    every row maps without side values (no legacy_extra, no filled column). Rows duplicated
    in the old table itself (a table without the natural key as a constraint) raise a unique
    violation: the savepoint rolls back and the caller stages the window instead.
    """
    if plan.extra or plan.fill or not _window_empty(new, plan, window.new):
        return None
    into = sql.SQL("{} ({})").format(
        sql.Identifier(SCHEMA, plan.name),
        sql.SQL(", ").join(sql.Identifier(c.name) for c in plan.copy),
    )
    try:
        with new.transaction():  # a savepoint inside the batch's transaction
            return _stream(old, new, select_sql(plan, window.old, extra=False), into)
    except psycopg.errors.UniqueViolation:
        log.info("%s: duplicates in the old window, staging it instead", plan.name)
        return None


def _batch(old: Conn, new: Conn, plan: TablePlan, window: Window | None) -> int:
    """Copy one batch (directly, or staged and inserted); the caller commits. Rows inserted."""
    if window is not None and (direct := _direct(old, new, plan, window)) is not None:
        return direct
    where = window.old if window is not None else None
    new.execute(staging_sql(plan))
    _stream(old, new, select_sql(plan, where), sql.Identifier(STAGE))
    inserted = new.execute(insert_sql(plan)).rowcount
    if plan.extra:
        new.execute(extra_sql(plan))
    return max(inserted, 0)


def _record(new: Conn, table: str, until: datetime | None, rows: int) -> None:
    new.execute(
        "INSERT INTO tracksolid.legacy_adoption (table_name, copied_until, rows) "
        "VALUES (%s, %s, %s) ON CONFLICT (table_name) DO UPDATE SET "
        "copied_until = EXCLUDED.copied_until, rows = legacy_adoption.rows + EXCLUDED.rows, "
        "updated_at = now()",
        (table, until, rows),
    )


def copy_table(
    old: Conn,
    new: Conn,
    plan: TablePlan,
    *,
    step: timedelta = timedelta(days=1),
    rewind: timedelta = timedelta(0),
    on_batch: BatchHook | None = None,
) -> int:
    """Copy one table (registry in one pass, history in `step` windows); rows inserted.

    A resumed run starts at the recorded `copied_until` minus `rewind` (rows that arrived
    late in the old database, older than what was already copied; duplicates are skipped).

    `new` must be in autocommit mode: each batch is one transaction with its progress row.
    Raises `CopyError` (from the database error) when a batch fails; earlier batches stay.
    """
    total = 0
    try:
        if plan.time_column is None:
            with new.transaction():
                total = _batch(old, new, plan, None)
                _record(new, plan.name, None, total)
            if on_batch:
                on_batch(plan.name, None, total)
            return total
        t = plan.old_expr(plan.time_column)
        bounds = old.execute(
            sql.SQL("SELECT min({t}), max({t}) FROM {i}").format(
                t=t, i=sql.Identifier(SCHEMA, plan.name)
            )
        ).fetchone()
        if bounds is None or bounds[0] is None:
            return 0
        done = copied_until(new, plan.name)
        start = max(bounds[0], done - rewind) if done is not None else bounds[0]
        stop = bounds[1] + timedelta(microseconds=1)  # half-open: include the newest row
        for a, b in windows(start, stop, step):
            with new.transaction():
                rows = _batch(old, new, plan, Window.of(plan, a, b))
                # never move the mark backwards (a rewound window ends before it)
                _record(new, plan.name, max(b, done) if done is not None else b, rows)
            total += rows
            log.info("copied %s: %d rows up to %s", plan.name, rows, b.isoformat())
            if on_batch:
                on_batch(plan.name, b, rows)
    except psycopg.Error as exc:
        raise CopyError(f"{plan.name}: {exc}") from exc
    return total
