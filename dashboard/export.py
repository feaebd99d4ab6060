"""CSV exports of the read-API (issue #18): `format=csv` or `Accept: text/csv` on the lists
(dashboard/lists.py) and the summaries (fuel fills, utilisation, driver behaviour).

`csv_response` streams the rows of one SQL query from a server-side cursor (psycopg named
cursor, `CSV_BATCH_ROWS` rows per FETCH), so a year of trips never sits in the API's memory.
The query runs and its first batch is fetched before the response starts: a bad filter (the
reporting functions' SQLSTATE 22023) or a timeout still answers with a clean 422 / 503 instead
of a CSV cut off after its header.

Cells:
- the header row is the query's column names; NULL is an empty cell;
- times are ISO-8601 in East Africa Time (`2026-12-01T14:05:00+03:00`), the operators' zone;
- text starting with `=`, `+`, `-`, `@`, a tab or a carriage return is prefixed with `'`, so a
  spreadsheet shows it instead of running it as a formula (CSV injection, OWASP). Numbers are
  never prefixed (a latitude of -1.29 stays a number).
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from fastapi.responses import StreamingResponse
from psycopg import sql
from psycopg_pool import ConnectionPool

from dashboard.params import EAT

CSV_BATCH_ROWS = 2_000
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """One value as CSV cell text (see the module docstring for the rules)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(EAT).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, (int, float, Decimal, date)):
        return str(value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_text(rows: Iterable[Sequence[Any]]) -> str:
    """Rows as CSV text (RFC 4180 quoting, CRLF line ends)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerows([csv_cell(v) for v in row] for row in rows)
    return buffer.getvalue()


def export_filename(kind: str, first: date, last: date) -> str:
    """`trips-2026-12-01_2026-12-02.csv`: what the rows are and the EAT days they cover."""
    return f"{kind}-{first.isoformat()}_{last.isoformat()}.csv"


def _chunks(
    pool: ConnectionPool,
    query: sql.Composable | str,
    params: Sequence[Any] | dict[str, Any],
) -> Iterator[str]:
    """The CSV text: the header and the first batch, then one chunk per further batch. The
    connection goes back to the pool when the iterator ends or is closed (client gone)."""
    with pool.connection() as conn, conn.cursor(name="csv_export") as cur:
        cur.execute(query, params)  # type: ignore[arg-type]
        rows = cur.fetchmany(CSV_BATCH_ROWS)
        header = [column.name for column in cur.description or ()]
        yield csv_text([header]) + csv_text(rows)
        while len(rows) == CSV_BATCH_ROWS:
            rows = cur.fetchmany(CSV_BATCH_ROWS)
            if rows:
                yield csv_text(rows)


def csv_response(
    pool: ConnectionPool,
    query: sql.Composable | str,
    params: Sequence[Any] | dict[str, Any],
    filename: str,
) -> StreamingResponse:
    """Stream the query's rows as a CSV download named `filename`. Runs the query before
    returning, so its errors become the usual JSON error answers."""
    chunks = _chunks(pool, query, params)
    first = next(chunks)  # executes the query and fetches the first batch: errors raise here
    return StreamingResponse(
        itertools.chain([first], chunks),
        media_type=CSV_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
