"""Dump keys, the retention rules (pure), listing and pruning a dump folder on S3.

A dump is `<BACKUP_PREFIX><dbname>/<YYYY-MM-DD>T<HHMMSS>Z.dump` (UTC start time); other keys
in the folder are ignored, never pruned. `select_to_keep` holds the rules (see its docstring
and backup/README.md); `prune` applies them to a folder.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from typing import TYPE_CHECKING

from backup.errors import BackupError
from ts_shared import utcnow

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

STAMP_FORMAT = "%Y-%m-%dT%H%M%SZ"
_DUMP_NAME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{6}Z\.dump")


@dataclass(frozen=True)
class DumpInfo:
    """One dump object in the bucket."""

    key: str
    taken_at: datetime
    size: int


def dump_folder(prefix: str, dbname: str) -> str:
    """The folder of one database's dumps: `<BACKUP_PREFIX><dbname>/`."""
    return f"{prefix}{dbname}/"


def dump_key(prefix: str, dbname: str, when: datetime) -> str:
    """`<prefix><dbname>/<YYYY-MM-DD>T<HHMMSS>Z.dump` for a dump started at `when` (aware)."""
    if when.tzinfo is None:
        raise ValueError("naive datetime passed to dump_key")
    return f"{dump_folder(prefix, dbname)}{when.astimezone(UTC).strftime(STAMP_FORMAT)}.dump"


def parse_dump_time(key: str) -> datetime | None:
    """The UTC start time encoded in a dump key's file name; None when it is not a dump name."""
    name = key.rsplit("/", 1)[-1]
    if not _DUMP_NAME.fullmatch(name):
        return None
    try:
        return datetime.strptime(name.removesuffix(".dump"), STAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:  # e.g. month 13: looks like a dump name, is not one
        return None


def select_to_keep(
    keys_with_times: Iterable[tuple[str, datetime]],
    keep_daily: int,
    keep_weekly: int,
    now: datetime,
) -> set[str]:
    """The keys retention keeps; every other key may be deleted.

    Daily: the newest dump of each UTC day, for the `keep_daily` most recent days that have a
    dump. Weekly: the newest dump of each ISO week, for the `keep_weekly` most recent weeks
    whose newest dump is not already kept as a daily one (so the weekly dumps reach further
    back than the daily ones; borg/restic semantics). Days without a dump do not use up a slot,
    so a stopped backup job never makes the old dumps expire. Whatever the settings, the newest
    dump is kept; dumps dated after `now` (clock skew) are kept and take no slot.
    """
    items = sorted(keys_with_times, key=lambda item: (item[1], item[0]), reverse=True)
    # Dated after `now`: kept, and kept out of the rules so they cannot displace real ones.
    keep = {key for key, taken in items if taken > now}
    past = [(key, taken) for key, taken in items if taken <= now]
    if past:
        _keep_newest_per_period(past, keep, keep_daily, lambda t: t.date())
        _keep_newest_per_period(past, keep, keep_weekly, lambda t: t.isocalendar()[:2])
        keep.add(past[0][0])
    return keep


def _keep_newest_per_period(
    items: Sequence[tuple[str, datetime]],
    keep: set[str],
    count: int,
    period_of: Callable[[datetime], Hashable],
) -> None:
    """Add the newest item of each period (items newest first) until `count` were added."""
    added = 0
    last: Hashable = None
    for key, taken in items:
        if added >= count:
            return
        period = period_of(taken.astimezone(UTC))
        if period == last:
            continue
        last = period
        if key not in keep:  # a period whose newest dump another rule kept does not count
            keep.add(key)
            added += 1


def parse_at(text: str) -> dtime:
    """`HH:MM` (UTC) → time; ValueError when malformed."""
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip())
    if not match:
        raise ValueError(f"expected HH:MM, got {text!r}")
    return dtime(int(match[1]), int(match[2]), tzinfo=UTC)


def next_run_time(now: datetime, at: dtime) -> datetime:
    """The first `at` (UTC) strictly after `now`."""
    now = now.astimezone(UTC)
    candidate = now.replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
    if candidate <= now:
        candidate += timedelta(days=1)
    return candidate


def list_dumps(
    s3: S3Client, bucket: str, folder: str, *, recursive: bool = False
) -> list[DumpInfo]:
    """Dumps under `folder`, newest first. Keys that are not dump names are ignored (never
    pruned); `recursive` also lists the sub-folders (every database under the prefix)."""
    dumps: list[DumpInfo] = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=folder):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if not recursive and "/" in key[len(folder) :]:
                continue
            taken = parse_dump_time(key)
            if taken is None:
                continue
            dumps.append(DumpInfo(key, taken, int(obj.get("Size", 0))))
    dumps.sort(key=lambda d: (d.taken_at, d.key), reverse=True)
    return dumps


@dataclass
class PruneReport:
    """What retention kept and deleted (or would delete, on a dry run)."""

    kept: list[DumpInfo] = field(default_factory=list)
    deleted: list[DumpInfo] = field(default_factory=list)
    dry_run: bool = False


def prune(
    s3: S3Client,
    bucket: str,
    folder: str,
    keep_daily: int,
    keep_weekly: int,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
) -> PruneReport:
    """Delete the dumps under `folder` that `select_to_keep` does not keep; BackupError when
    S3 refuses a deletion."""
    dumps = list_dumps(s3, bucket, folder)
    keep = select_to_keep(
        [(d.key, d.taken_at) for d in dumps], keep_daily, keep_weekly, now or utcnow()
    )
    report = PruneReport(dry_run=dry_run)
    for dump in dumps:
        (report.kept if dump.key in keep else report.deleted).append(dump)
    if dry_run or not report.deleted:
        return report
    doomed = [d.key for d in report.deleted]
    for start in range(0, len(doomed), 1000):  # DeleteObjects takes at most 1000 keys
        batch = doomed[start : start + 1000]
        reply = s3.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
        )
        if errors := reply.get("Errors"):
            details = ", ".join(f"{e.get('Key')}: {e.get('Message')}" for e in errors[:5])
            raise BackupError(f"S3 refused to delete {len(errors)} dump(s): {details}")
    for dump in report.deleted:
        log.info("pruned s3://%s/%s", bucket, dump.key)
    return report
