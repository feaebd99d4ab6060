"""Database backups: nightly `pg_dump -Fc` to S3, retention, listing and restore.

The entry point is `python -m backup.pg_backup` (see `backup/pg_backup.py` and
`backup/README.md`).
"""
