"""Verification after the copy: per table, row count and time range equal on both sides."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg import sql

from legacy.copy import copied_until
from legacy.inspect import SCHEMA, Conn, Stats, TablePlan


@dataclass(frozen=True)
class Check:
    table: str
    old: Stats
    new: Stats
    until: datetime | None  # history: the copied range ends here (exclusive)

    @property
    def ok(self) -> bool:
        return (self.old.rows, self.old.tmin, self.old.tmax) == (
            self.new.rows,
            self.new.tmin,
            self.new.tmax,
        )


def _stats(conn: Conn, plan: TablePlan, until: datetime | None, *, old: bool) -> Stats:
    """Count and time range up to `until`; `old` reads the old side's (possibly renamed) column."""
    ident = sql.Identifier(SCHEMA, plan.name)
    if plan.time_column is None:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()
        return Stats(int(row[0]) if row else 0)
    t = plan.old_expr(plan.time_column) if old else sql.Identifier(plan.time_column)
    query = sql.SQL("SELECT count(*), min({t}), max({t}) FROM {i} WHERE {t} < %s").format(
        t=t, i=ident
    )
    row = conn.execute(query, (until or "infinity",)).fetchone()
    return Stats(int(row[0]), row[1], row[2]) if row else Stats(0)


def verify(old: Conn, new: Conn, plans: list[TablePlan]) -> list[Check]:
    """Compare every planned table over the range recorded as copied."""
    checks: list[Check] = []
    for plan in plans:
        until = copied_until(new, plan.name) if plan.time_column else None
        checks.append(
            Check(
                plan.name,
                _stats(old, plan, until, old=True),
                _stats(new, plan, until, old=False),
                until,
            )
        )
    return checks


def render(checks: list[Check]) -> str:
    """One line per table: OK/MISMATCH, counts and time ranges of both sides."""
    lines = ["Verification (old | new):"]
    for c in checks:
        span = ""
        if c.until is not None:
            span = f"  min {c.old.tmin} | {c.new.tmin}  max {c.old.tmax} | {c.new.tmax}"
        flag = "OK      " if c.ok else "MISMATCH"
        lines.append(f"  {flag} {c.table}: rows {c.old.rows} | {c.new.rows}{span}")
    return "\n".join(lines)
