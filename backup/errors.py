"""The exception tree of the backup package."""

from __future__ import annotations


class BackupError(Exception):
    """Base of every failure of the backup package."""


class ToolError(BackupError):
    """pg_dump / pg_restore missing, or too old for the server."""


class DumpError(BackupError):
    """pg_dump failed or the upload failed; nothing was left in the bucket."""


class RestoreError(BackupError):
    """The dump could not be found, downloaded or restored."""


class TargetNotEmptyError(RestoreError):
    """The restore target already has tables in schema `tracksolid` (and --force was not given)."""
