"""Parts of the ingest worker (`ingest_worker.py` is the entry point).

- `parse`    pure functions: API item → typed row (no I/O), with the API's odd inputs
- `quality`  the GPS quality filter (drop / flag rules)
- `writers`  bulk, idempotent writes (binary COPY; INSERT ... ON CONFLICT where rows may exist)
- `jobs`     the polling jobs: fetch → parse → write, one batch at a time
- `registry` the operator's device registry CSV import
"""
