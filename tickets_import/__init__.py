"""Parts of the tickets importer (`import_tickets.py` is the entry point).

`parse` — pure CSV → cleaned rows; `store` — database writes; `feed` — the S3 change stream;
`geocode` — the LocationIQ-compatible geocoder and the gazetteer caches; `replay` — the
dead letters (list, retry) and the upsert that dead-letters a value the database refuses.
"""
