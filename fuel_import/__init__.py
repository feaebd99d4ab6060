"""Parts of the fuel importer (`import_fuel.py` is the entry point).

`parse` — pure JSON → validated records (field aliases, number/time rules, bounds, values
PostgreSQL cannot hold); `store` — database writes (records, dead letters, quarantined files,
file ledger, watermark); `feed` — the S3 snapshot and delta files, and the `quarantine/` move.
"""
