"""Parts of the JIMI push receiver (`webhook_receiver.py` is the entry point).

- `parse`  — pure functions: decoded push items → typed rows (no I/O);
- `store`  — one delivery → one SQL statement (inbox + typed tables + ingestion_log);
- `spool`  — the durable local spool used while PostgreSQL is unreachable;
- `pipeline` — direct write or spool, and the replayer thread;
- `redact` — the push token blanked in everything stored or spooled (pure functions).
"""
