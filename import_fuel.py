"""Fuel importer: WhatsApp fuel records from S3 (snapshot, hourly deltas) or a file → `fuel`.

Usage:
    python import_fuel.py --snapshot [--apply]     # full reconcile from fuel_records/latest.json
    python import_fuel.py --changes  [--apply]     # deltas fuel_records/changes/<ISO-ts>.json
    python import_fuel.py --file PATH [--apply]    # one local file (upsert only, no reconcile)

Without `--apply` it is a dry run: files are read and parsed and the counts reported, and
nothing is written (not even the audit log). Each file is one transaction: its records,
its rejects, the file ledger and the watermark commit together. Records are upserted on the
source `id`; a record whose `updated_at` is older than the stored one never overwrites it
(out-of-order deltas), and an unchanged record is not rewritten (a rerun is a no-op).

Exit status: 0 when every file was read (bad records are skipped and reported with their
index, id and reason), 1 when a file could not be read or parsed as a whole (named in the
log), 2 on bad usage. See docs/fuel.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from ts_shared import (
    Settings,
    clean,
    clean_ts,
    make_pool,
    make_s3_client,
    normalize_plate,
    record_ingestion,
    setup_logging,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

EAT = ZoneInfo("Africa/Nairobi")  # naive feed times are East Africa Time (UTC+3)
SNAPSHOT_NAME = "latest.json"
CHANGES_DIR = "changes/"
DEFAULT_LOOKBACK_HOURS = 48
MAX_LITRES = Decimal(2000)  # more than any tank or bowser fill: a typo (e.g. KES in litres)
MAX_MISSING_FRACTION = 0.5  # a snapshot hiding more live rows than this is not trusted
MAX_BAD_IN_LOG = 100

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


@dataclass
class FileReport:
    """What applying (or dry-running) one file did."""

    key: str
    records: int = 0
    bad: list[BadRecord] = field(default_factory=list)
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0
    missing_marked: int = 0
    error: str | None = None


@dataclass
class RunReport:
    """Every file of one run."""

    mode: str
    dry_run: bool
    files: list[FileReport] = field(default_factory=list)

    @property
    def failed(self) -> list[FileReport]:
        """Files that could not be read or parsed as a whole."""
        return [f for f in self.files if f.error is not None]

    def total(self, name: str) -> int:
        """Sum of a counter over the files (`bad` counts the bad records)."""
        if name == "bad":
            return sum(len(f.bad) for f in self.files)
        return sum(int(getattr(f, name)) for f in self.files)


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


# ─────────────────────────────────────────────────────────────────────────────
# Database writes (one file = one transaction, in the caller's transaction)
# ─────────────────────────────────────────────────────────────────────────────

_UPSERT = """
WITH incoming AS (
    SELECT x.id, x.raw FROM jsonb_to_recordset(%(rows)s::jsonb) AS x(id text, raw jsonb)
),
stale AS (
    SELECT count(*) AS n
    FROM incoming AS i JOIN fuel.records AS r ON r.id = i.id
    WHERE fuel.to_ts(fuel.raw_text(i.raw, ARRAY['updated_at', 'updatedAt', 'modified_at']))
          < r.src_updated_at
),
ups AS (
    INSERT INTO fuel.records AS r (id, raw, source_key)
    SELECT id, raw, %(key)s FROM incoming
    ON CONFLICT (id) DO UPDATE
        SET raw = CASE WHEN %(merge)s THEN r.raw || EXCLUDED.raw ELSE EXCLUDED.raw END,
            source_key = EXCLUDED.source_key,
            missing_since = NULL
        WHERE (r.src_updated_at IS NULL OR EXCLUDED.src_updated_at IS NULL
               OR EXCLUDED.src_updated_at >= r.src_updated_at)
          AND (r.missing_since IS NOT NULL
               OR r.raw IS DISTINCT FROM
                  CASE WHEN %(merge)s THEN r.raw || EXCLUDED.raw ELSE EXCLUDED.raw END)
    RETURNING (xmax = 0) AS inserted
)
SELECT (SELECT count(*) FROM ups WHERE inserted),
       (SELECT count(*) FROM ups WHERE NOT inserted),
       (SELECT n FROM stale)
"""

_MARK_MISSING = """
UPDATE fuel.records AS r SET missing_since = now()
WHERE r.missing_since IS NULL
  AND r.deleted_at IS NULL
  AND NOT (r.id = ANY(%(ids)s))
  AND (r.src_updated_at IS NULL OR r.src_updated_at <= %(as_of)s)
"""

_COUNT_MISSING = """
SELECT count(*) FILTER (WHERE NOT (r.id = ANY(%(ids)s))
                          AND (r.src_updated_at IS NULL OR r.src_updated_at <= %(as_of)s)),
       count(*)
FROM fuel.records AS r
WHERE r.missing_since IS NULL AND r.deleted_at IS NULL
"""

_REJECT = """
INSERT INTO fuel.rejects (source_key, record_index, record_id, reason, raw)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (source_key, record_index) DO UPDATE
    SET record_id = EXCLUDED.record_id, reason = EXCLUDED.reason, raw = EXCLUDED.raw,
        seen_at = now()
"""

_LEDGER = """
INSERT INTO fuel.ingest_files (object_key, etag, kind, records, bad, inserted, updated)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (object_key) DO UPDATE
    SET etag = EXCLUDED.etag, kind = EXCLUDED.kind, records = EXCLUDED.records,
        bad = EXCLUDED.bad, inserted = EXCLUDED.inserted, updated = EXCLUDED.updated,
        processed_at = now()
"""

_STATE = """
INSERT INTO fuel.ingest_state (feed, watermark_key, last_etag, last_run_at, detail, updated_at)
VALUES (%(feed)s, %(key)s, %(etag)s, now(), %(detail)s, now())
ON CONFLICT (feed) DO UPDATE
    SET watermark_key = CASE WHEN %(advance)s THEN EXCLUDED.watermark_key
                             ELSE fuel.ingest_state.watermark_key END,
        last_etag = EXCLUDED.last_etag, last_run_at = now(), detail = EXCLUDED.detail,
        updated_at = now()
"""


def upsert_records(
    conn: psycopg.Connection[Any], records: Sequence[FuelRecord], key: str, report: FileReport
) -> None:
    """Upsert on id: live records replace `raw`, deletions merge into it; older
    `updated_at` never wins; identical rows are left alone."""
    for merge in (False, True):
        batch = [{"id": r.id, "raw": r.raw} for r in records if r.deletion is merge]
        if not batch:
            continue
        row = conn.execute(_UPSERT, {"rows": Jsonb(batch), "key": key, "merge": merge}).fetchone()
        assert row is not None
        inserted, updated, stale = (int(v) for v in row)
        report.inserted += inserted
        report.updated += updated
        report.stale += stale
        report.unchanged += len(batch) - inserted - updated - stale


def save_rejects(conn: psycopg.Connection[Any], key: str, bad: Sequence[BadRecord]) -> None:
    """Keep every skipped record with its reason in fuel.rejects (raw is never lost); a
    re-read file (the daily snapshot) replaces its previous rejects."""
    conn.execute("DELETE FROM fuel.rejects WHERE source_key = %s", (key,))
    if bad:
        with conn.cursor() as cur:
            cur.executemany(_REJECT, [(key, b.index, b.id, b.reason, Jsonb(b.raw)) for b in bad])


def mark_missing(
    conn: psycopg.Connection[Any], parsed: ParsedFile, as_of: datetime, report: FileReport
) -> None:
    """Full reconcile: live rows absent from the snapshot (and not updated after it was
    exported) get `missing_since`; refused when the snapshot would hide too many rows."""
    present = [r.id for r in parsed.records] + [b.id for b in parsed.bad if b.id is not None]
    if not present:
        log.warning("fuel %s: snapshot holds no records; reconcile skipped", parsed.key)
        return
    params = {"ids": present, "as_of": as_of}
    row = conn.execute(_COUNT_MISSING, params).fetchone()
    would, total = (int(row[0]), int(row[1])) if row else (0, 0)
    if would > 10 and would > MAX_MISSING_FRACTION * total:
        log.warning(
            "fuel %s: snapshot would hide %d of %d live records; reconcile skipped "
            "(a truncated export?)",
            parsed.key,
            would,
            total,
        )
        return
    cur = conn.execute(_MARK_MISSING, params)
    report.missing_marked = cur.rowcount


def apply_parsed(
    pool: ConnectionPool,
    parsed: ParsedFile,
    *,
    kind: str,
    etag: str | None,
    report: FileReport,
    reconcile_as_of: datetime | None = None,
    state_feed: str | None = None,
    advance_watermark: bool = False,
) -> None:
    """Write one parsed file in one transaction: records, rejects, ledger, watermark."""
    with pool.connection() as conn, conn.transaction():
        upsert_records(conn, parsed.records, parsed.key, report)
        save_rejects(conn, parsed.key, parsed.bad)
        if reconcile_as_of is not None:
            mark_missing(conn, parsed, reconcile_as_of, report)
        conn.execute(
            _LEDGER,
            (
                parsed.key,
                etag,
                kind,
                parsed.total,
                len(parsed.bad),
                report.inserted,
                report.updated,
            ),
        )
        if state_feed is not None:
            conn.execute(
                _STATE,
                {
                    "feed": state_feed,
                    "key": parsed.key,
                    "etag": etag,
                    "advance": advance_watermark,
                    "detail": Jsonb(_file_summary(report)),
                },
            )


# ─────────────────────────────────────────────────────────────────────────────
# Modes
# ─────────────────────────────────────────────────────────────────────────────


@dataclass
class Importer:
    """Wires S3 / files → parse → write for one run."""

    settings: Settings
    apply: bool
    pool: ConnectionPool | None = None
    s3: S3Client | None = None

    @property
    def prefix(self) -> str:
        """The feed's prefix in the fuel bucket, with a trailing slash."""
        prefix = self.settings.fuel_prefix
        return prefix if not prefix or prefix.endswith("/") else prefix + "/"

    def _pool(self) -> ConnectionPool:
        if self.pool is None:
            self.pool = make_pool(self.settings.dsn(), min_size=1, max_size=2, name="import_fuel")
        return self.pool

    def _s3(self) -> S3Client:
        if self.s3 is None:
            self.s3 = make_s3_client(self.settings)
        return self.s3

    def _get(self, key: str) -> tuple[bytes, str | None, datetime | None]:
        started = time.monotonic()
        try:
            obj = self._s3().get_object(Bucket=self.settings.fuel_bucket, Key=key)
            body = obj["Body"].read()
        except Exception as exc:  # botocore raises many unrelated types; all mean "unreadable"
            raise FileParseError(f"{key}: cannot read from S3: {exc}") from exc
        log.info(
            "s3 get %s/%s %d bytes in %dms",
            self.settings.fuel_bucket,
            key,
            len(body),
            int((time.monotonic() - started) * 1000),
        )
        return body, obj.get("ETag", "").strip('"') or None, obj.get("LastModified")

    def _process(
        self,
        report: RunReport,
        key: str,
        load: Callable[[], tuple[bytes, str | None, datetime | None]],
        *,
        kind: str,
        reconcile: bool = False,
        state_feed: str | None = None,
        advance_watermark: bool = False,
    ) -> FileReport:
        file_report = FileReport(key)
        report.files.append(file_report)
        try:
            data, etag, modified = load()
            parsed = parse_file(data, key)
        except FileParseError as exc:
            file_report.error = str(exc)
            log.error("fuel file %s could not be read: %s", key, exc)
            return file_report
        file_report.records = len(parsed.records)
        file_report.bad = parsed.bad
        for bad in parsed.bad:
            log.warning("fuel %s record #%d id=%s skipped: %s", key, bad.index, bad.id, bad.reason)
        if self.apply:
            as_of = (parsed.generated_at or modified or None) if reconcile else None
            apply_parsed(
                self._pool(),
                parsed,
                kind=kind,
                etag=etag,
                report=file_report,
                reconcile_as_of=as_of,
                state_feed=state_feed,
                advance_watermark=advance_watermark,
            )
        log.info("fuel %s %s", key, json.dumps(_file_summary(file_report)))
        return file_report

    def snapshot(self) -> RunReport:
        """Full reconcile from `<prefix>latest.json`."""
        report = RunReport("snapshot", not self.apply)
        key = self.prefix + SNAPSHOT_NAME
        self._process(
            report,
            key,
            functools.partial(self._get, key),
            kind="snapshot",
            reconcile=True,
            state_feed="snapshot",
            advance_watermark=True,
        )
        return report

    def file(self, path: Path) -> RunReport:
        """Upsert one local file (snapshot or delta format); no reconcile, no watermark."""
        report = RunReport("file", not self.apply)

        def load() -> tuple[bytes, str | None, datetime | None]:
            try:
                return path.read_bytes(), None, None
            except OSError as exc:
                raise FileParseError(f"{path}: cannot read: {exc}") from exc

        self._process(report, f"file:{path.resolve()}", load, kind="file")
        return report

    def changes(self, lookback_hours: int = DEFAULT_LOOKBACK_HOURS) -> RunReport:
        """Apply every delta after the watermark, in key order; late files (a key below the
        watermark, within the look-back window, never applied) are applied too. A file that
        cannot be read stops the watermark there: later files are applied and re-checked
        on the next run (idempotent), the bad one is retried until fixed."""
        report = RunReport("changes", not self.apply)
        pool = self._pool()
        with pool.connection() as conn:
            row = conn.execute(
                "SELECT watermark_key FROM fuel.ingest_state WHERE feed = 'changes'"
            ).fetchone()
        watermark = str(row[0]) if row and row[0] else None
        prefix = self.prefix + CHANGES_DIR
        etags = dict(self._list(prefix, _start_after(prefix, watermark, lookback_hours)))
        keys = sorted(etags)
        with pool.connection() as conn:
            done = {
                str(r[0]): r[1]
                for r in conn.execute(
                    "SELECT object_key, etag FROM fuel.ingest_files WHERE object_key = ANY(%s)",
                    (keys,),
                ).fetchall()
            }
        stored = watermark
        blocked = False
        for key in keys:
            advance = not blocked and (watermark is None or key > watermark)
            if key in done and done[key] == etags[key]:
                if advance:  # applied on an earlier run while an older file was blocked
                    watermark = key
                continue
            file_report = self._process(
                report,
                key,
                functools.partial(self._get, key),
                kind="changes",
                state_feed="changes",
                advance_watermark=advance,
            )
            if file_report.error is not None:
                blocked = True
            elif advance:
                watermark = key
        if self.apply and watermark != stored:
            with pool.connection() as conn:
                conn.execute(
                    "UPDATE fuel.ingest_state SET watermark_key = %s, updated_at = now()"
                    " WHERE feed = 'changes' AND watermark_key IS DISTINCT FROM %s",
                    (watermark, watermark),
                )
        log.info(
            "fuel changes: %d new file(s), watermark now %s%s",
            len(report.files),
            watermark,
            " (dry run)" if not self.apply else "",
        )
        return report

    def _list(self, prefix: str, start_after: str | None) -> Iterator[tuple[str, str | None]]:
        paginator = self._s3().get_paginator("list_objects_v2")
        kwargs: dict[str, Any] = {"Bucket": self.settings.fuel_bucket, "Prefix": prefix}
        if start_after:
            kwargs["StartAfter"] = start_after
        try:
            for page in paginator.paginate(**kwargs):
                for obj in page.get("Contents", []):
                    key = obj.get("Key", "")
                    if key.endswith(".json"):
                        yield key, (obj.get("ETag") or "").strip('"') or None
        except Exception as exc:  # botocore: any failure means the listing is unusable
            raise FuelImportError(f"cannot list s3://{kwargs['Bucket']}/{prefix}: {exc}") from exc


_KEY_HOUR = re.compile(r"^(\d{4}-\d{2}-\d{2})T(\d{2})")


def _start_after(prefix: str, watermark: str | None, lookback_hours: int) -> str | None:
    """Where to start listing: the watermark's hour minus the look-back window (keys are
    ISO timestamps, so they sort by time); the watermark itself when it is not one."""
    if watermark is None:
        return None
    match = _KEY_HOUR.match(watermark.removeprefix(prefix))
    if match is None or lookback_hours <= 0:
        return watermark
    hour = datetime.strptime(f"{match[1]}T{match[2]}", "%Y-%m-%dT%H")  # noqa: DTZ007
    return prefix + (hour - timedelta(hours=lookback_hours)).strftime("%Y-%m-%dT%H")


def _file_summary(report: FileReport) -> dict[str, Any]:
    return {
        "records": report.records,
        "bad": len(report.bad),
        "inserted": report.inserted,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "stale": report.stale,
        "missing_marked": report.missing_marked,
    }


def _audit(pool: ConnectionPool, report: RunReport, started: float) -> None:
    bad = [
        {"file": f.key, "index": b.index, "id": b.id, "reason": b.reason}
        for f in report.files
        for b in f.bad
    ]
    record_ingestion(
        pool,
        source="import",
        method="import_fuel",
        target=report.mode,
        ok=not report.failed,
        rows=report.total("inserted") + report.total("updated"),
        duration_ms=int((time.monotonic() - started) * 1000),
        error="; ".join(f.error for f in report.failed if f.error) or None,
        detail={
            "files": {f.key: _file_summary(f) for f in report.files},
            "bad": bad[:MAX_BAD_IN_LOG],
            "bad_total": len(bad),
        },
    )


# ─────────────────────────────────────────────────────────────────────────────
# Entry point
# ─────────────────────────────────────────────────────────────────────────────


def build_parser() -> argparse.ArgumentParser:
    """The CLI."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--snapshot", action="store_true", help="full reconcile from latest.json")
    mode.add_argument("--changes", action="store_true", help="hourly deltas since the watermark")
    mode.add_argument("--file", type=Path, metavar="PATH", help="import one local JSON file")
    parser.add_argument("--apply", action="store_true", help="write (default: dry run)")
    parser.add_argument(
        "--lookback-hours",
        type=int,
        default=DEFAULT_LOOKBACK_HOURS,
        help="--changes: also pick up late files this far below the watermark",
    )
    return parser


def run(
    args: argparse.Namespace,
    settings: Settings,
    *,
    pool: ConnectionPool | None = None,
    s3: S3Client | None = None,
) -> RunReport:
    """Run one mode; the audit row goes to tracksolid.ingestion_log when applying."""
    started = time.monotonic()
    mode = "snapshot" if args.snapshot else "changes" if args.changes else "file"
    importer = Importer(settings, apply=bool(args.apply), pool=pool, s3=s3)
    own_pool = pool is None
    try:
        if args.snapshot:
            report = importer.snapshot()
        elif args.changes:
            report = importer.changes(args.lookback_hours)
        else:
            report = importer.file(args.file)
    except FuelImportError as exc:
        if importer.apply:
            failed = RunReport(mode, dry_run=False, files=[FileReport("-", error=str(exc))])
            _audit(importer._pool(), failed, started)
        raise
    else:
        totals = {name: report.total(name) for name in _file_summary(FileReport("-"))}
        log.info(
            "import_fuel %s%s: files=%d failed=%d %s",
            report.mode,
            " (dry run, nothing written)" if report.dry_run else "",
            len(report.files),
            len(report.failed),
            json.dumps(totals),
        )
        if importer.apply:
            _audit(importer._pool(), report, started)
        return report
    finally:
        if own_pool and importer.pool is not None:
            importer.pool.close()


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 a file failed, 2 usage)."""
    args = build_parser().parse_args(argv)
    if settings is None:
        settings = Settings()
        setup_logging(settings.log_level)
    try:
        report = run(args, settings)
    except (psycopg.Error, FuelImportError) as exc:
        log.error("import_fuel failed: %s", exc)
        return 1
    for failed in report.failed:
        log.error("import_fuel: file %s not imported: %s", failed.key, failed.error)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
