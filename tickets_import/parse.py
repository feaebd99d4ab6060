"""Pure parsing of an INC change file (CSV) into cleaned rows; no I/O.

Cleaning follows seed 003: drop `is_alarm=true` rows and the `EXPORT STOPPED…` sentinel,
drop the export's bookkeeping columns, lower-case `region`, upper-case `raw_status`. Every
other value is kept as trimmed text in `raw` (empty → null); the database derives the typed
columns from `raw`, so parsing here only validates what would otherwise be silently lost.

Bounds (`Bounds`, docs/tickets.md): a value ≤ 2,000 characters, a record ≤ 64 KiB of UTF-8,
a ticket id ≤ 64 characters, a header ≤ 256 columns. A value PostgreSQL cannot hold (a NUL
byte, a lone surrogate) or a bound exceeded rejects only its row.

Failure modes: `UnreadableFileError` when the file as a whole cannot be used (not UTF-8, no
header, no `ticket_id` column, a NUL in the header, too many columns); a bad row is recorded
in `ParsedFile.errors` (with its raw text, secrets redacted, for the dead letters) and
skipped. Nothing else is raised, whatever the input.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from ts_shared import RedactSecretsFilter, clean, clean_bool, clean_num

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
# A dead letter keeps at most this much of a rejected record (a runaway quoted field can
# swallow the rest of a file); a cut record is marked and cannot be replayed.
MAX_DEAD_LETTER_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Bounds:
    """Documented size bounds of the feed (docs/tickets.md § Bounds); exceeding one rejects
    the row (or, for `columns`, the file)."""

    field_chars: int = 2000  # any one value, after trimming
    row_bytes: int = 64 * 1024  # one CSV record as UTF-8, quotes and line breaks included
    ticket_id_chars: int = MAX_TICKET_ID_LEN
    columns: int = 256  # header cells


DEFAULT_BOUNDS = Bounds()


class UnreadableFileError(Exception):
    """The file cannot be imported at all (encoding, header); the importer quarantines it."""


@dataclass(frozen=True)
class RowIssue:
    """A problem with one CSV record: `line` is the record's first physical line (1-based).
    For a skipped record, `raw` is its text (secrets redacted) and `ticket_id` its id when
    one could be read; both are None for warnings."""

    source: str
    line: int
    reason: str
    raw: str | None = None
    ticket_id: str | None = None

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class TicketRow:
    """One cleaned ticket: its key and the `raw` document stored in tickets.inc."""

    ticket_id: str
    raw: dict[str, Any]
    line: int
    # The record as sent (secrets not yet redacted): dead-lettered if the database refuses it.
    source_text: str = field(default="", repr=False, compare=False)


@dataclass
class ParsedFile:
    """Outcome of parsing one change file."""

    source: str
    header: list[str] = field(default_factory=list)
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


def parse_csv_bytes(data: bytes, source: str, *, bounds: Bounds | None = None) -> ParsedFile:
    """Parse one change file given as bytes; see the module doc for failure modes."""
    return parse_csv_text(decode(data, source), source, bounds=bounds)


def parse_csv_text(text: str, source: str, *, bounds: Bounds | None = None) -> ParsedFile:
    """Parse the text of one change file into cleaned, de-duplicated ticket rows."""
    limits = bounds or DEFAULT_BOUNDS
    result = ParsedFile(source=source)
    # The physical lines, kept so a record's raw text is a slice (the reader never reads
    # ahead; line_num counts the lines it consumed). Iterating a list stays in C.
    lines = io.StringIO(text, newline="").readlines()
    reader = csv.reader(lines, strict=True)

    def raw(start: int) -> str:
        end = reader.line_num
        return lines[start] if end == start + 1 else "".join(lines[start:end])

    try:
        header_cells = next(reader)
    except StopIteration:
        raise UnreadableFileError(f"{source}: empty file (no header)") from None
    except csv.Error as exc:
        raise UnreadableFileError(f"{source}: header is not valid CSV ({exc})") from exc
    result.header = header = check_header(header_cells, source, limits)

    by_id: dict[str, TicketRow] = {}
    while True:
        start = reader.line_num
        line = start + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result.records += 1
            text_of = redact_secrets(raw(start))
            result.errors.append(RowIssue(source, line, f"malformed CSV: {exc}", text_of))
            continue
        raw_text = raw(start)
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue  # blank line
        result.records += 1
        outcome = parse_record(header, cells, raw_text, source, line, limits)
        if isinstance(outcome, RowIssue):
            result.errors.append(outcome)
        elif isinstance(outcome, str):
            if outcome == "sentinel":
                result.dropped_sentinel += 1
            else:
                result.dropped_alarm += 1
        else:
            row, warnings = outcome
            result.warnings.extend(warnings)
            if row.ticket_id in by_id:
                result.duplicates += 1
                del by_id[row.ticket_id]  # re-insert so file order reflects the last occurrence
            by_id[row.ticket_id] = row
    result.rows = list(by_id.values())
    return result


def check_header(cells: list[str], source: str, bounds: Bounds | None = None) -> list[str]:
    """The normalised header (trimmed, lower-case); `UnreadableFileError` when unusable."""
    limits = bounds or DEFAULT_BOUNDS
    if len(cells) > limits.columns:
        raise UnreadableFileError(
            f"{source}: header has {len(cells)} columns (bound {limits.columns})"
        )
    header = [cell.strip().lower() for cell in cells]
    if any(_unstorable(name) or len(name) > limits.field_chars for name in header):
        raise UnreadableFileError(f"{source}: header has a NUL byte, invalid text or a huge name")
    if "ticket_id" not in header:
        raise UnreadableFileError(f"{source}: header has no ticket_id column")
    if len(set(header)) != len(header):
        duplicated = sorted({name for name in header if header.count(name) > 1})
        raise UnreadableFileError(f"{source}: duplicate header column(s) {duplicated}")
    return header


def parse_record(
    header: list[str],
    cells: list[str],
    raw_text: str,
    source: str,
    line: int,
    bounds: Bounds | None = None,
) -> tuple[TicketRow, list[RowIssue]] | RowIssue | str:
    """One CSV record → the row and its warnings, a `RowIssue` (rejected: carries the raw
    text, redacted), or "alarm" / "sentinel" (dropped by design). Never raises."""
    limits = bounds or DEFAULT_BOUNDS

    def reject(reason: str) -> RowIssue:
        at = header.index("ticket_id") if "ticket_id" in header else len(cells)
        ticket_id = cells[at].strip()[: limits.ticket_id_chars] if at < len(cells) else ""
        readable = ticket_id and not _unstorable(ticket_id)
        return RowIssue(
            source, line, reason, redact_secrets(raw_text), ticket_id if readable else None
        )

    if cells and cells[0].strip().upper().startswith(SENTINEL_PREFIX):
        return "sentinel"
    if len(raw_text) * 4 > limits.row_bytes:  # a UTF-8 character is at most 4 bytes
        size = len(raw_text.encode("utf-8", "surrogatepass"))
        if size > limits.row_bytes:
            return reject(f"row is {size:,} bytes (bound {limits.row_bytes:,})")
    if len(cells) != len(header):
        return reject(f"expected {len(header)} fields, got {len(cells)}")
    # Whole-record checks first (C speed); only a suspicious record is searched field by field.
    if "\x00" in raw_text or len(raw_text) > limits.field_chars or _unstorable(raw_text):
        for name, value in zip(header, cells, strict=True):
            problem = value_problem(value, limits)
            if problem:
                return reject(f"{name}: {problem}")
    outcome = clean_record(dict(zip(header, cells, strict=True)), source, line, limits)
    if isinstance(outcome, RowIssue):
        return reject(outcome.reason)
    if outcome is None:
        return "alarm"
    row, warnings = outcome
    return TicketRow(row.ticket_id, row.raw, line, raw_text), warnings


def value_problem(value: str, bounds: Bounds | None = None) -> str | None:
    """Why PostgreSQL (or the documented bounds) cannot take `value`, or None when it can."""
    limits = bounds or DEFAULT_BOUNDS
    if "\x00" in value:
        return "contains a NUL byte (PostgreSQL text cannot hold it)"
    if _unstorable(value):
        return "contains invalid Unicode (a lone surrogate)"
    if len(value) > limits.field_chars and len(value.strip()) > limits.field_chars:
        return f"value is {len(value.strip()):,} characters (bound {limits.field_chars:,})"
    return None


def _unstorable(value: str) -> bool:
    """True when `value` cannot be sent to PostgreSQL as UTF-8 text."""
    if "\x00" in value:
        return True
    if value.isascii():
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# Secret-looking values never reach the dead letters: query parameters (ts_shared's filter),
# `password: x` / `secret=x` pairs, bearer tokens, AWS access keys, JWTs, URL credentials.
_SECRET_PATTERNS = (
    (
        re.compile(
            r"(?i)\b((?:pass(?:word)?|passwd|pwd|secret|api[_-]?key|token)\s*[:=]\s*)[^\s,;&\"']+"
        ),
        r"\1***",
    ),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1***"),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "***"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), "***"),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@"), r"\1***@"),
)


def redact_secrets(text: str) -> str:
    """`text` with anything secret-looking replaced by `***` (for dead letters and logs)."""
    text = RedactSecretsFilter.redact(text)
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def clean_record(
    record: dict[str, str], source: str, line: int, bounds: Bounds | None = None
) -> tuple[TicketRow, list[RowIssue]] | RowIssue | None:
    """Clean one record: the row and its warnings, a `RowIssue` to skip it, or None when it
    is an alarm row (dropped by design). The values must already be storable
    (`value_problem`)."""
    limits = bounds or DEFAULT_BOUNDS
    if clean_bool(record.get("is_alarm")) is True:
        return None
    ticket_id = clean(record.get("ticket_id"))
    if ticket_id is None:
        return RowIssue(source, line, "empty ticket_id")
    if len(ticket_id) > limits.ticket_id_chars or any(ch.isspace() for ch in ticket_id):
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


def reparse_record(
    header: list[str], raw: bytes, source: str, line: int, *, bounds: Bounds | None = None
) -> tuple[TicketRow, list[RowIssue]] | RowIssue | str:
    """Parse a dead-lettered record again (its stored bytes and its file's header), as
    `parse_record` does. Never raises."""
    limits = bounds or DEFAULT_BOUNDS
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RowIssue(source, line, f"not UTF-8 ({exc.reason})", raw.decode("utf-8", "replace"))
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        records = list(reader)
    except csv.Error as exc:
        return RowIssue(source, line, f"malformed CSV: {exc}", redact_secrets(text))
    if len(records) != 1:
        return RowIssue(source, line, f"{len(records)} CSV records, expected 1", text)
    return parse_record(header, records[0], text, source, line, limits)


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
