"""Parts of the fuel importer (`import_fuel.py` is the entry point).

`parse` — pure JSON → validated records (field aliases, number/time rules); `store` — database
writes (records, rejects, file ledger, watermark); `feed` — the S3 snapshot and delta files.
"""
