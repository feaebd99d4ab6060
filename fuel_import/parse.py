"""Pure parsing of a fuel feed file (JSON snapshot or delta) into records; no I/O.

Field aliases (first present wins) mirror the trigger fuel.records_derive; `parse_number`
and `parse_time` mirror the SQL functions fuel.to_num and fuel.to_ts.

Failure modes: `FileParseError` when a file as a whole is unusable (not JSON, no record
list); a bad record becomes a `BadRecord` with its index, id and reason and is skipped.
"""

from __future__ import annotations

import json
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


# ─────────────────────────────────────────────────────────────────────────────
# Errors and parsed shapes
# ─────────────────────────────────────────────────────────────────────────────


class FuelImportError(Exception):
    """Base of the importer's failures."""


class FileParseError(FuelImportError):
    """A whole file could not be read or parsed (not JSON, no record list, S3 error)."""


@dataclass(frozen=True)
class FuelRecord:
    """One importable source record: its id, the raw object, and how to apply it."""

    index: int
    id: str
    raw: dict[str, Any]
    deletion: bool  # a soft delete or delete op: merged into the stored raw, fields optional
    updated_at: datetime | None


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


def parse_record(item: Any, index: int) -> FuelRecord | BadRecord:
    """Validate one source record; a `BadRecord` says why it cannot be imported.

    Live records need an id, a plate, litres (0 < l ≤ 2000) and a fill time. Deletions (a
    `deleted_at` value or an `op: delete`) need only the id, so a delete always lands.
    Unparsable amount/odometer values do not reject a fill: they are stored NULL and listed
    in fuel.records.parse_issues by the trigger.
    """
    if not isinstance(item, dict):
        return BadRecord(index, None, f"record is not a JSON object ({type(item).__name__})", item)
    rid = record_id(item.get("id"))
    if rid is None:
        reason = "missing id" if clean(item.get("id")) is None else "id is not an int or string"
        return BadRecord(index, None, reason, item)

    def bad(reason: str) -> BadRecord:
        return BadRecord(index, rid, reason, item)

    updated_raw = first_value(item, UPDATED_KEYS)
    updated_at = parse_time(updated_raw)
    if updated_raw is not None and updated_at is None:
        return bad(f"updated_at unparsable: {updated_raw!r}")
    deleted_raw = first_value(item, DELETED_KEYS)
    if deleted_raw is not None and parse_time(deleted_raw) is None:
        return bad(f"deleted_at unparsable: {deleted_raw!r}")
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
            return bad(f"litres not a number: {litres_raw!r}")
        if litres <= 0 or litres > MAX_LITRES:
            return bad(f"litres out of range (0, {MAX_LITRES}]: {litres}")
        time_raw = first_value(item, TIME_KEYS)
        if time_raw is None:
            return bad("fill time missing")
        if parse_time(time_raw) is None:
            return bad(f"fill time unparsable: {time_raw!r}")
    return FuelRecord(index, rid, item, deletion, updated_at)


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
        raise FileParseError(f"{key}: JSON object has no records list ({', '.join(ENVELOPE_KEYS)})")
    raise FileParseError(f"{key}: top level is {type(document).__name__}, not an object or list")


def parse_file(data: bytes, key: str) -> ParsedFile:
    """Parse one feed file (`{metadata, records[]}` or a bare list); raise `FileParseError`
    when the file as a whole is unusable. Duplicate ids keep the newest `updated_at` (the
    later one on a tie)."""
    try:
        document = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileParseError(f"{key}: not valid JSON: {exc}") from exc
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
