"""The S3 change stream: list `changes/*.csv`, read one file, archive it to `processed/`, or
move an unreadable one to `quarantine/<key>` with a `<key>.reason.json` beside it.

Failure modes: `FeedReadError` when a file cannot be fetched, `FeedArchiveError` when the
copy/delete of the archive or quarantine step fails, `FeedListError` when the bucket cannot
be listed. All wrap the botocore error (`raise ... from exc`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from ts_shared import QUARANTINE_PREFIX, copy_to_quarantine, quarantine_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)


class FeedError(Exception):
    """Base of the change-stream errors."""


class FeedListError(FeedError):
    """The bucket/prefix could not be listed."""


class FeedReadError(FeedError):
    """A change file could not be fetched."""


class FeedArchiveError(FeedError):
    """A committed change file could not be moved to the processed prefix."""


@dataclass(frozen=True)
class ChangeFile:
    """One object of the change stream."""

    key: str
    size: int


def list_change_files(s3: S3Client, bucket: str, prefix: str) -> list[ChangeFile]:
    """Every `*.csv` directly or deeper under `prefix`, oldest first (key order: the names
    are EAT timestamps, which sort chronologically)."""
    files: list[ChangeFile] = []
    try:
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key = obj.get("Key", "")
                if key.lower().endswith(".csv") and not key.startswith(QUARANTINE_PREFIX):
                    files.append(ChangeFile(key, int(obj.get("Size", 0))))
    except (BotoCoreError, ClientError) as exc:
        raise FeedListError(f"cannot list s3://{bucket}/{prefix}: {exc}") from exc
    files.sort(key=lambda f: f.key)
    log.info("s3 list s3://%s/%s -> %d change file(s)", bucket, prefix, len(files))
    return files


def read_file(s3: S3Client, bucket: str, key: str) -> bytes:
    """The bytes of one change file."""
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        data = body.read()
    except (BotoCoreError, ClientError) as exc:
        raise FeedReadError(f"cannot read s3://{bucket}/{key}: {exc}") from exc
    log.debug("s3 get s3://%s/%s -> %d bytes", bucket, key, len(data))
    return data


def archived_key(key: str, prefix: str, processed_prefix: str) -> str:
    """Where `key` goes when archived: the processed prefix + the path below `prefix`."""
    tail = key[len(prefix) :] if key.startswith(prefix) else key.rsplit("/", 1)[-1]
    return processed_prefix + tail


def archive(s3: S3Client, bucket: str, key: str, prefix: str, processed_prefix: str) -> str:
    """Move a committed file to the processed prefix (copy, then delete). Re-running it after
    a partial failure is harmless: the copy overwrites, the delete is idempotent."""
    dest = archived_key(key, prefix, processed_prefix)
    try:
        s3.copy_object(Bucket=bucket, Key=dest, CopySource={"Bucket": bucket, "Key": key})
        s3.delete_object(Bucket=bucket, Key=key)
    except (BotoCoreError, ClientError) as exc:
        raise FeedArchiveError(f"cannot archive s3://{bucket}/{key} -> {dest}: {exc}") from exc
    log.info("s3 archived %s -> %s", key, dest)
    return dest


def quarantine(s3: S3Client, bucket: str, key: str, reason: dict[str, object]) -> str:
    """Copy an unreadable file to `quarantine/<key>` and write `quarantine/<key>.reason.json`
    beside it. The original stays until `delete` (called once the database recorded the
    quarantine); re-running after a partial failure is harmless."""
    dest = quarantine_key(key)
    try:
        copy_to_quarantine(s3, bucket, key, reason)
    except (BotoCoreError, ClientError) as exc:
        raise FeedArchiveError(f"cannot quarantine s3://{bucket}/{key} -> {dest}: {exc}") from exc
    log.info("s3 quarantined %s -> %s", key, dest)
    return dest


def delete(s3: S3Client, bucket: str, key: str) -> None:
    """Delete one object (idempotent)."""
    try:
        s3.delete_object(Bucket=bucket, Key=key)
    except (BotoCoreError, ClientError) as exc:
        raise FeedArchiveError(f"cannot delete s3://{bucket}/{key}: {exc}") from exc


def unquarantine(s3: S3Client, bucket: str, key: str) -> None:
    """Put a quarantined file back under its original key (and drop the quarantine copy and
    its reason object), so the next drain imports it."""
    source = quarantine_key(key)
    try:
        s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": source})
        s3.delete_object(Bucket=bucket, Key=source)
        s3.delete_object(Bucket=bucket, Key=source + ".reason.json")
    except (BotoCoreError, ClientError) as exc:
        raise FeedArchiveError(f"cannot restore s3://{bucket}/{source} -> {key}: {exc}") from exc
    log.info("s3 restored %s -> %s", source, key)
