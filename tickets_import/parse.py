"""Pure parsing of an INC change file (CSV) into cleaned rows; no I/O.

Cleaning follows seed 003: drop `is_alarm=true` rows and the `EXPORT STOPPED…` sentinel,
drop the export's bookkeeping columns, lower-case `region`, upper-case `raw_status`. Every
other value is kept as trimmed text in `raw` (empty → null); the database derives the typed
columns from `raw`, so parsing here only validates what would otherwise be silently lost.

Failure modes: `UnreadableFileError` when the file as a whole cannot be used (not UTF-8, no
header, no `ticket_id` column); a bad row is recorded in `ParsedFile.errors` and skipped.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from ts_shared import clean, clean_bool, clean_num

EAT = ZoneInfo("Africa/Nairobi")

# Export bookkeeping the seed drops at ingest (constant or meaningless per row).
DROPPED_COLUMNS = frozenset(
    {
        "week_start",
        "week_end",
        "source_s3_bucket",
        "source_s3_key",
        "source_snapshot_id",
        "department",
        "source_type",
    }
)
# Lifecycle and bookkeeping times, naive EAT in the feed; converted by tickets.eat_ts().
TIME_COLUMNS = (
    "created_at_service",
    "scheduled_at",
    "closed_at",
    "first_seen_at",
    "last_seen_at",
    "source_created_at",
    "source_updated_at",
)
# What tickets.eat_ts() reads; other spellings are reported as warnings (the column is NULL).
_DB_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?$")
SENTINEL_PREFIX = "EXPORT STOPPED"
_NULLS = frozenset({"null", "none", "nan", "undefined", "n/a"})  # as ts_shared.clean()
MAX_TICKET_ID_LEN = 64


class UnreadableFileError(Exception):
    """The file cannot be imported at all (encoding, header); it is left where it is."""


@dataclass(frozen=True)
class RowIssue:
    """A problem with one CSV record: `line` is the record's first physical line (1-based)."""

    source: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class TicketRow:
    """One cleaned ticket: its key and the `raw` document stored in tickets.inc."""

    ticket_id: str
    raw: dict[str, Any]
    line: int


@dataclass
class ParsedFile:
    """Outcome of parsing one change file."""

    source: str
    rows: list[TicketRow] = field(default_factory=list)
    records: int = 0  # data records read (excluding the header)
    dropped_alarm: int = 0
    dropped_sentinel: int = 0
    duplicates: int = 0  # same ticket_id again later in the file (the later one wins)
    errors: list[RowIssue] = field(default_factory=list)  # skipped records
    warnings: list[RowIssue] = field(default_factory=list)  # kept, a field becomes NULL


def decode(data: bytes, source: str) -> str:
    """UTF-8 text of a file (a BOM is dropped); `UnreadableFileError` when it is not UTF-8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableFileError(
            f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from exc


def parse_csv_bytes(data: bytes, source: str) -> ParsedFile:
    """Parse one change file given as bytes; see the module doc for failure modes."""
    return parse_csv_text(decode(data, source), source)


def parse_csv_text(text: str, source: str) -> ParsedFile:
    """Parse the text of one change file into cleaned, de-duplicated ticket rows."""
    result = ParsedFile(source=source)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header_cells = next(reader)
    except StopIteration:
        raise UnreadableFileError(f"{source}: empty file (no header)") from None
    except csv.Error as exc:
        raise UnreadableFileError(f"{source}: header is not valid CSV ({exc})") from exc
    header = [cell.strip().lower() for cell in header_cells]
    if "ticket_id" not in header:
        raise UnreadableFileError(f"{source}: header has no ticket_id column")
    if len(set(header)) != len(header):
        duplicated = sorted({name for name in header if header.count(name) > 1})
        raise UnreadableFileError(f"{source}: duplicate header column(s) {duplicated}")

    by_id: dict[str, TicketRow] = {}
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result.records += 1
            result.errors.append(RowIssue(source, line, f"malformed CSV: {exc}"))
            continue
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue  # blank line
        result.records += 1
        if cells[0].strip().upper().startswith(SENTINEL_PREFIX):
            result.dropped_sentinel += 1
            continue
        if len(cells) != len(header):
            result.errors.append(
                RowIssue(source, line, f"expected {len(header)} fields, got {len(cells)}")
            )
            continue
        outcome = clean_record(dict(zip(header, cells, strict=True)), source, line)
        if isinstance(outcome, RowIssue):
            result.errors.append(outcome)
            continue
        if outcome is None:
            result.dropped_alarm += 1
            continue
        row, warnings = outcome
        result.warnings.extend(warnings)
        if row.ticket_id in by_id:
            result.duplicates += 1
            del by_id[row.ticket_id]  # re-insert so file order reflects the last occurrence
        by_id[row.ticket_id] = row
    result.rows = list(by_id.values())
    return result


def clean_record(
    record: dict[str, str], source: str, line: int
) -> tuple[TicketRow, list[RowIssue]] | RowIssue | None:
    """Clean one record: the row and its warnings, a `RowIssue` to skip it, or None when it
    is an alarm row (dropped by design)."""
    if clean_bool(record.get("is_alarm")) is True:
        return None
    ticket_id = clean(record.get("ticket_id"))
    if ticket_id is None:
        return RowIssue(source, line, "empty ticket_id")
    if len(ticket_id) > MAX_TICKET_ID_LEN or any(ch.isspace() for ch in ticket_id):
        return RowIssue(source, line, f"implausible ticket_id {ticket_id[:40]!r}")
    raw: dict[str, Any] = {}
    for name, value in record.items():
        if name in DROPPED_COLUMNS:
            continue
        # ts_shared.clean() inlined: this loop runs ~30 times a row.
        text = value.strip()
        raw[name] = None if not text or (len(text) <= 9 and text.lower() in _NULLS) else text
    raw["ticket_id"] = ticket_id
    if raw.get("region") is not None:
        raw["region"] = raw["region"].lower()
    if raw.get("raw_status") is not None:
        raw["raw_status"] = raw["raw_status"].upper()
    warnings: list[RowIssue] = []
    for name in TIME_COLUMNS:
        stamp: str | None = raw.get(name)
        if stamp is not None and not _is_db_time(stamp):
            warnings.append(
                RowIssue(source, line, f"{name}={stamp[:40]!r} is not a time; stored NULL")
            )
    for name in ("latitude", "longitude"):
        number: str | None = raw.get(name)
        if number is not None and clean_num(number) is None:
            warnings.append(RowIssue(source, line, f"{name}={number[:40]!r} is not a number"))
    return TicketRow(ticket_id, raw, line), warnings


def _is_db_time(value: str) -> bool:
    """True when tickets.eat_ts() will read `value` (the shape, and a real calendar date)."""
    if len(value) == 19 and value[10] == " ":
        pass  # the feed's usual shape: fromisoformat below checks every field
    elif not _DB_TIME.match(value):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def parse_eat(value: str | None) -> datetime | None:
    """A feed time (naive EAT) as an aware UTC datetime, as tickets.eat_ts() computes it."""
    if value is None or not _is_db_time(value):
        return None
    return datetime.fromisoformat(value).replace(tzinfo=EAT).astimezone(UTC)
