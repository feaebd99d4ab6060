"""The fuel feed in S3: read one file, list the delta files, where a listing starts.

Layout under the feed's prefix (`FUEL_PREFIX`, default `fuel_records/`): the full snapshot
`latest.json` and the hourly deltas `changes/<ISO-ts>.json` (keys sort by time).

Failure modes: `FileParseError` when a file cannot be read (it counts as an unreadable file),
`FuelImportError` when the prefix cannot be listed (the run fails). Both wrap the botocore
error (`raise ... from exc`).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from fuel_import.parse import FileParseError, FuelImportError
from ts_shared import copy_to_quarantine, quarantine_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

SNAPSHOT_NAME = "latest.json"
CHANGES_DIR = "changes/"
DEFAULT_LOOKBACK_HOURS = 48


def read_object(
    s3: Callable[[], S3Client], bucket: str, key: str
) -> tuple[bytes, str | None, datetime | None]:
    """The bytes, etag and last-modified time of one object. `s3` builds (or returns the
    cached) client inside the error handling, so any failure means "unreadable"."""
    started = time.monotonic()
    try:
        obj = s3().get_object(Bucket=bucket, Key=key)
        body = obj["Body"].read()
    except Exception as exc:  # botocore raises many unrelated types; all mean "unreadable"
        raise FileParseError(f"{key}: cannot read from S3: {exc}") from exc
    log.info(
        "s3 get %s/%s %d bytes in %dms",
        bucket,
        key,
        len(body),
        int((time.monotonic() - started) * 1000),
    )
    return body, obj.get("ETag", "").strip('"') or None, obj.get("LastModified")


def list_json(
    s3: Callable[[], S3Client], bucket: str, prefix: str, start_after: str | None
) -> Iterator[tuple[str, str | None]]:
    """Every `*.json` key under `prefix` (after `start_after`, if given) with its etag."""
    paginator = s3().get_paginator("list_objects_v2")
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
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


def listing_start(prefix: str, watermark: str | None, lookback_hours: int) -> str | None:
    """Where to start listing: the watermark's hour minus the look-back window (keys are
    ISO timestamps, so they sort by time); the watermark itself when it is not one."""
    if watermark is None:
        return None
    match = _KEY_HOUR.match(watermark.removeprefix(prefix))
    if match is None or lookback_hours <= 0:
        return watermark
    hour = datetime.strptime(f"{match[1]}T{match[2]}", "%Y-%m-%dT%H")  # noqa: DTZ007
    return prefix + (hour - timedelta(hours=lookback_hours)).strftime("%Y-%m-%dT%H")


def quarantine_copy(
    s3: Callable[[], S3Client], bucket: str, key: str, reason: dict[str, Any]
) -> str:
    """Copy `key` to `quarantine/<key>` and write `quarantine/<key>.reason.json` beside it;
    the original is deleted by `delete_object` once the quarantine is recorded. Raises
    `FileParseError` when S3 refuses (the file then holds the watermark)."""
    target = quarantine_key(key)
    try:
        copy_to_quarantine(s3(), bucket, key, reason)
    except Exception as exc:  # botocore: any failure means "not quarantined"
        raise FileParseError(f"{key}: cannot move to {target}: {exc}") from exc
    return target


def delete_object(s3: Callable[[], S3Client], bucket: str, key: str) -> bool:
    """Delete `key` (after its quarantine copy); False, logged, when S3 refuses."""
    try:
        s3().delete_object(Bucket=bucket, Key=key)
    except Exception as exc:  # botocore: the copy exists; the ledger keeps the file skipped
        log.warning("fuel %s: quarantined copy written but the original not deleted: %s", key, exc)
        return False
    return True
