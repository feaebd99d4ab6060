"""Alerts that reach people (issue #17, docs/alerts.md).

- `rules`    — rule kinds, parameter validation, the rule table;
- `evaluate` — one set-based statement per rule turns source rows into alerts (dedup);
- `outbox`   — grouping / cooldown / digest into the durable outbox, delivery exactly once;
- `channels` — signed webhook and SMTP e-mail;
- `run`, `job` — one pass (CLI `run-once`, worker job `alerts`).
"""
