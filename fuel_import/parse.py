"""Pure parsing of a fuel feed file (JSON snapshot or delta) into records; no I/O.

Field aliases (first present wins) mirror the trigger fuel.records_derive; `parse_number`
and `parse_time` mirror the SQL functions fuel.to_num and fuel.to_ts.

Failure modes: `FileContentError` (a `FileParseError`) when a file as a whole is unusable
(not UTF-8, not JSON, nested deeper than `MAX_DEPTH`, no record list) — the importer
quarantines it; a bad record becomes a `BadRecord` with its index, id and reason (the
documented record error: `parse_record` never raises) and goes to the dead letters.

Bounds (docs/fuel.md "Bounds"): a file is at most `MAX_FILE_BYTES` and `MAX_DEPTH` brackets
deep (checked on the raw bytes, without recursion, before `json.loads`); a record is at most
`MAX_RECORD_BYTES` of JSON; every text value at most `MAX_TEXT_CHARS` characters (longer
rejects the record — nothing is truncated silently). Values PostgreSQL cannot hold (NaN,
Infinity, 1e400, integers over `MAX_INT_DIGITS` digits, NUL, lone surrogates) are cleaned to
null in optional fields and reject the record in the fields the importer reads.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from ts_shared import clean, clean_ts, normalize_plate

EAT = ZoneInfo("Africa/Nairobi")  # naive feed times are East Africa Time (UTC+3)
MAX_LITRES = Decimal(2000)  # more than any tank or bowser fill: a typo (e.g. KES in litres)

# Key aliases, first present wins. The trigger fuel.records_derive uses the same lists.
PLATE_KEYS = ("car", "plate", "vehicle", "vehicle_number", "reg_no")
LITRES_KEYS = ("litres", "liters", "litre", "quantity", "volume")
# fmt: off
TIME_KEYS = ("filled_at", "fill_time", "fuel_date", "fueled_at", "fuelled_at", "date_time",
             "datetime", "date", "created_at")
# fmt: on
UPDATED_KEYS = ("updated_at", "updatedAt", "modified_at")
DELETED_KEYS = ("deleted_at", "deletedAt")
OP_KEYS = ("op", "_op", "operation", "action")
DELETE_OPS = frozenset({"delete", "deleted", "d", "remove", "removed"})
ENVELOPE_KEYS = ("records", "changes", "data", "items")
ID_KEYS = ("id",)
# Keys whose value decides whether/how a record is stored: a value PostgreSQL cannot hold
# here rejects the record; anywhere else it is cleaned to null.
REQUIRED_KEYS = frozenset(
    ID_KEYS + PLATE_KEYS + LITRES_KEYS + TIME_KEYS + UPDATED_KEYS + DELETED_KEYS + OP_KEYS
)

MAX_FILE_BYTES = 64 * 1024 * 1024  # a feed file (the snapshot of ~100k fills is ~30 MB)
MAX_DEPTH = 32  # bracket nesting of a file (a record is 2 deep in its envelope)
MAX_RECORD_BYTES = 64 * 1024  # one record as JSON
MAX_TEXT_CHARS = 2000  # one text value (a driver name, a note)
MAX_INT_DIGITS = 64  # longer integers are treated as out of range (like 1e400)
SECRET_KEY = re.compile(
    r"pass(word|wd)?|pwd|secret|token|api[_-]?key|auth|credential|session|cookie|"
    r"private[_-]?key|\bpin\b|otp",
    re.IGNORECASE,
)
SECRET_VALUE = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
REDACTED = "[redacted]"
TRUNCATED_MARK = "...[truncated]"


# ─────────────────────────────────────────────────────────────────────────────
# Errors and parsed shapes
# ─────────────────────────────────────────────────────────────────────────────


class FuelImportError(Exception):
    """Base of the importer's failures."""


class FileParseError(FuelImportError):
    """A whole file could not be read or parsed (not JSON, no record list, S3 error)."""


class FileContentError(FileParseError):
    """The file was fetched but its content is unusable as a whole (not UTF-8, not JSON,
    too deep or too large, wrong top-level shape): the importer quarantines it."""


@dataclass(frozen=True)
class FuelRecord:
    """One importable source record: its id, the raw object, and how to apply it."""

    index: int
    id: str
    raw: dict[str, Any]
    deletion: bool  # a soft delete or delete op: merged into the stored raw, fields optional
    updated_at: datetime | None
    cleaned: tuple[str, ...] = ()  # optional values PostgreSQL cannot hold, set to null


@dataclass(frozen=True)
class BadRecord:
    """A record skipped with the reason (kept in fuel.rejects when applied)."""

    index: int
    id: str | None
    reason: str
    raw: Any


@dataclass
class ParsedFile:
    """What a file holds: good records (deduplicated on id), bad ones, its export time."""

    key: str
    records: list[FuelRecord]
    bad: list[BadRecord]
    generated_at: datetime | None = None
    total: int = 0


# ─────────────────────────────────────────────────────────────────────────────
# Pure parsing
# ─────────────────────────────────────────────────────────────────────────────

_CURRENCY = re.compile(r"^(KES|KSHS|KSH|SHS|SH)\.?\s*")
_UNIT = re.compile(r"\s*(LITRES|LITERS|LTRS|LTR|LT|L|KMS|KM)\.?$")
_PLAIN_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def parse_number(value: Any) -> Decimal | None:
    """A number as typed on WhatsApp (`5,000`, `KES 4500`, `45.5 L`); None otherwise.
    Mirrors the SQL function fuel.to_num."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = Decimal(str(value))
        return number if number.is_finite() else None
    text = clean(value)
    if text is None:
        return None
    text = _UNIT.sub("", _CURRENCY.sub("", text.upper(), count=1), count=1)
    text = text.replace(",", "").replace(" ", "")
    if len(text) <= 30 and _PLAIN_NUMBER.fullmatch(text):
        return Decimal(text)
    return None


def parse_time(value: Any) -> datetime | None:
    """A feed timestamp; naive values are East Africa Time. Mirrors fuel.to_ts."""
    return clean_ts(value, tz=EAT)


def first_value(raw: Mapping[str, Any], keys: Sequence[str]) -> Any:
    """The first non-empty value among `keys` (same rule as fuel.raw_text)."""
    for key in keys:
        value = raw.get(key)
        if isinstance(value, dict | list):
            return value
        if clean(value) is not None:
            return value
    return None


def record_id(value: Any) -> str | None:
    """The source id as text (`12`, `12.0` and `"12"` are the same record); None if unusable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else None
    if isinstance(value, str):
        text = clean(value)
        if text is not None and len(text) <= 200:
            return text
    return None


# ─────────────────────────────────────────────────────────────────────────────
# Values PostgreSQL cannot hold, bounds, redaction (iterative: no recursion anywhere)
# ─────────────────────────────────────────────────────────────────────────────


class _TooDeepError(Exception):
    """A value nested deeper than MAX_DEPTH (only reachable through a direct call)."""


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (not valid Unicode)"
    return None


def _walk(value: Any, *, clean_values: bool, redact: bool) -> tuple[Any, list[tuple[str, str]]]:
    """A copy of `value` and the problems found, as (path, what). With `clean_values`, values
    PostgreSQL cannot hold become None (keys holding them are dropped); with `redact`,
    secret-looking values become "[redacted]". Raises `_TooDeepError` past MAX_DEPTH."""
    problems: list[tuple[str, str]] = []
    holder: list[Any] = [None]
    stack: list[tuple[Any, Any, Any, str, int]] = [(value, holder, 0, "", 0)]
    while stack:
        item, parent, slot, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _TooDeepError
        result: Any = item
        if isinstance(item, dict):
            result = {}
            for key, child in item.items():
                name = key if isinstance(key, str) else str(key)
                child_path = f"{path}.{name}" if path else name
                key_problem = _text_problem(name)
                if key_problem is not None:
                    problems.append((child_path, f"key {key_problem}"))
                    if clean_values:
                        continue
                if redact and SECRET_KEY.search(name) and child is not None:
                    result[name] = REDACTED
                    continue
                result[name] = None
                stack.append((child, result, name, child_path, depth + 1))
        elif isinstance(item, list | tuple):
            result = [None] * len(item)
            for i, child in enumerate(item):
                stack.append((child, result, i, f"{path}[{i}]", depth + 1))
        elif isinstance(item, bool) or item is None:
            pass
        elif isinstance(item, int):
            if abs(item) >= 10**MAX_INT_DIGITS:
                problems.append((path, "number out of range"))
                result = None if clean_values else math.copysign(math.inf, item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                problems.append((path, f"not a finite number ({item})"))
                result = None if clean_values else item
        elif isinstance(item, str):
            text_problem = _text_problem(item)
            if text_problem is not None:
                problems.append((path, text_problem))
                result = None if clean_values else item
            elif len(item) > MAX_TEXT_CHARS:
                problems.append((path, f"text longer than {MAX_TEXT_CHARS} characters"))
            elif redact and SECRET_VALUE.search(item):
                result = SECRET_VALUE.sub(lambda m: f"{m[1]} {REDACTED}", item)
        else:
            problems.append((path, f"not a JSON value ({type(item).__name__})"))
            result = None if clean_values else str(item)
        parent[slot] = result
    return holder[0], problems


def storable(raw: Any) -> Any:
    """`raw` cleaned to what a jsonb column holds, secret-looking values redacted; None when
    it is too deep or larger than MAX_RECORD_BYTES (the dead letter's text still has it)."""
    try:
        cleaned, _ = _walk(raw, clean_values=True, redact=True)
    except _TooDeepError:
        return None
    if len(json.dumps(cleaned, ensure_ascii=False)) > MAX_RECORD_BYTES:
        return None
    return cleaned


def dead_letter_text(raw: Any) -> str:
    """The record as JSON text for `fuel.rejects.raw_text`: NaN/NUL/surrogates kept as JSON
    escapes (ASCII only, so PostgreSQL text holds it), secret-looking values redacted, at most
    MAX_RECORD_BYTES (a longer one ends with TRUNCATED_MARK and cannot be retried)."""
    try:
        redacted, _ = _walk(raw, clean_values=False, redact=True)
        text = json.dumps(redacted, ensure_ascii=True, allow_nan=True)
    except _TooDeepError:
        text = json.dumps(f"<nested deeper than {MAX_DEPTH} levels: not kept>")
    if len(text) > MAX_RECORD_BYTES:
        text = text[: MAX_RECORD_BYTES - len(TRUNCATED_MARK)] + TRUNCATED_MARK
    return text


def _feed_time(value: Any) -> datetime | None:
    """parse_time, with numbers held to the SQL rule (unix seconds/ms: 9 to 13 digits)."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if is_number and not (math.isfinite(value) and 1e8 <= value < 1e13):
        return None
    return parse_time(value)


def parse_record(item: Any, index: int) -> FuelRecord | BadRecord:
    """Validate one source record; a `BadRecord` says why it cannot be imported. Never
    raises: whatever `item` is, the answer is a `FuelRecord` or a `BadRecord`.

    Live records need an id, a plate, litres (0 < l ≤ 2000) and a fill time. Deletions (a
    `deleted_at` value or an `op: delete`) need only the id, so a delete always lands.
    Unparsable amount/odometer values do not reject a fill: they are stored NULL and listed
    in fuel.records.parse_issues by the trigger. Values PostgreSQL cannot hold are cleaned
    to null outside REQUIRED_KEYS (listed in `FuelRecord.cleaned`) and reject the record in
    them; a text over MAX_TEXT_CHARS or a record over MAX_RECORD_BYTES rejects it.
    """
    try:
        return _parse_record(item, index)
    except Exception as exc:  # the documented contract: a record error, never a crash
        return BadRecord(index, None, f"record could not be parsed: {type(exc).__name__}", item)


def _parse_record(item: Any, index: int) -> FuelRecord | BadRecord:
    if not isinstance(item, dict):
        return BadRecord(index, None, f"record is not a JSON object ({type(item).__name__})", item)
    try:
        cleaned_item, problems = _walk(item, clean_values=True, redact=False)
    except _TooDeepError:
        return BadRecord(index, None, f"record nested deeper than {MAX_DEPTH} levels", item)
    original = item
    rid = record_id(cleaned_item.get("id"))

    def bad(reason: str) -> BadRecord:
        return BadRecord(index, rid, reason, original)

    size = len(json.dumps(cleaned_item, ensure_ascii=False).encode("utf-8", "replace"))
    if size > MAX_RECORD_BYTES:
        return bad(f"record is {size} bytes of JSON, more than {MAX_RECORD_BYTES}")
    for path, what in problems:
        top = path.split(".", 1)[0].split("[", 1)[0]
        if top in REQUIRED_KEYS or what.startswith("text longer"):
            return bad(f"{path}: {what}")
    item = cleaned_item
    if rid is None:
        reason = "missing id" if clean(item.get("id")) is None else "id is not an int or string"
        return BadRecord(index, None, reason, original)

    updated_raw = first_value(item, UPDATED_KEYS)
    updated_at = _feed_time(updated_raw)
    if updated_raw is not None and updated_at is None:
        return bad(f"updated_at unparsable: {_show(updated_raw)}")
    deleted_raw = first_value(item, DELETED_KEYS)
    if deleted_raw is not None and _feed_time(deleted_raw) is None:
        return bad(f"deleted_at unparsable: {_show(deleted_raw)}")
    op = (clean(first_value(item, OP_KEYS)) or "").lower()
    deletion = deleted_raw is not None or op in DELETE_OPS
    if not deletion:
        plate = first_value(item, PLATE_KEYS)
        if normalize_plate(plate) is None:
            return bad("car (plate) missing")
        litres_raw = first_value(item, LITRES_KEYS)
        if litres_raw is None:
            return bad("litres missing")
        litres = parse_number(litres_raw)
        if litres is None:
            return bad(f"litres not a number: {_show(litres_raw)}")
        if litres <= 0 or litres > MAX_LITRES:
            return bad(f"litres out of range (0, {MAX_LITRES}]: {litres}")
        time_raw = first_value(item, TIME_KEYS)
        if time_raw is None:
            return bad("fill time missing")
        if _feed_time(time_raw) is None:
            return bad(f"fill time unparsable: {_show(time_raw)}")
    cleaned = tuple(f"{path}: {what}" for path, what in problems)
    return FuelRecord(index, rid, item, deletion, updated_at, cleaned)


def _show(value: Any) -> str:
    """A value for a reason: its repr, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _records_of(document: Any, key: str) -> tuple[list[Any], datetime | None]:
    if isinstance(document, list):
        return document, None
    if isinstance(document, dict):
        meta = document.get("metadata")
        if not isinstance(meta, dict):
            meta = {}
        generated = parse_time(
            first_value(meta, ("generated_at", "exported_at", "snapshot_at", "created_at"))
        )
        for name in ENVELOPE_KEYS:
            if isinstance(document.get(name), list):
                return document[name], generated
        names = ", ".join(ENVELOPE_KEYS)
        raise FileContentError(f"{key}: JSON object has no records list ({names})")
    raise FileContentError(f"{key}: top level is {type(document).__name__}, not an object or list")


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def bracket_depth(data: bytes, limit: int = MAX_DEPTH) -> int:
    """The deepest bracket nesting of JSON bytes (strings skipped), counted without
    recursion and without parsing; stops counting once past `limit`."""
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


def _bounded_int(text: str) -> int | float:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        return -math.inf if text.startswith("-") else math.inf  # like 1e400: out of range
    return int(text)


def load_json(data: bytes, key: str) -> Any:
    """The JSON document of `data`, within the bounds; `FileContentError` otherwise."""
    if len(data) > MAX_FILE_BYTES:
        raise FileContentError(f"{key}: {len(data)} bytes, more than {MAX_FILE_BYTES}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileContentError(f"{key}: not UTF-8: {exc}") from exc
    depth = bracket_depth(data)
    if depth > MAX_DEPTH:
        raise FileContentError(f"{key}: nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text, parse_int=_bounded_int)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise FileContentError(f"{key}: not valid JSON: {exc}") from exc


def parse_file(data: bytes, key: str) -> ParsedFile:
    """Parse one feed file (`{metadata, records[]}` or a bare list); raise `FileContentError`
    when the file as a whole is unusable. Duplicate ids keep the newest `updated_at` (the
    later one on a tie)."""
    document = load_json(data, key)
    items, generated_at = _records_of(document, key)
    good: dict[str, FuelRecord] = {}
    bad: list[BadRecord] = []
    for index, item in enumerate(items):
        parsed = parse_record(item, index)
        if isinstance(parsed, BadRecord):
            bad.append(parsed)
            continue
        seen = good.get(parsed.id)
        if seen is None or _not_older(parsed.updated_at, seen.updated_at):
            good[parsed.id] = parsed
    return ParsedFile(key, list(good.values()), bad, generated_at, len(items))


def _not_older(new: datetime | None, old: datetime | None) -> bool:
    return new is None or old is None or new >= old
