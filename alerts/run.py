"""One alerts pass: evaluate every enabled rule, compose the messages that are due, deliver
the outbox. Used by the worker job `alerts` (alerts/job.py) and `python -m alerts run-once`.

A failing rule (bad SQL against an older schema, a lock timeout) is logged and counted and
the pass goes on; the outbox is delivered even when evaluation failed, so messages already
composed are not held back by a broken rule.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from alerts.evaluate import evaluate_rule, prune_seen
from alerts.outbox import DeliveryStats, compose, deliver_due, message_due
from alerts.rules import RULE_COLUMNS
from ts_shared import Settings

log = logging.getLogger(__name__)


@dataclass
class PassResult:
    """What one pass did (ingestion_log detail of the `alerts` job)."""

    rules: int = 0
    alerts_touched: int = 0
    alerts_resolved: int = 0
    messages: int = 0  # outbox rows composed (message x channel)
    delivery: DeliveryStats = field(default_factory=DeliveryStats)
    skipped: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    evaluate_ms: int = 0
    deliver_ms: int = 0


def _rules(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {RULE_COLUMNS} FROM tracksolid.alert_rules WHERE enabled ORDER BY rule_id"
        )
        return cur.fetchall()


def evaluate_all(
    pool: ConnectionPool, settings: Settings, now: datetime, result: PassResult
) -> None:
    """Evaluate and compose every enabled rule, each in its own transactions."""
    with pool.connection() as conn:
        rules = _rules(conn)
        conn.commit()  # each rule below runs in its own transaction, not in this read's
        result.rules = len(rules)
        lag = timedelta(seconds=settings.alert_event_lag_s)
        for rule in rules:
            try:
                one = evaluate_rule(conn, rule, now, settings.webhook_spool_dir, lag)
                if one.skipped:
                    result.skipped[rule["name"]] = one.skipped
                result.alerts_touched += one.touched
                result.alerts_resolved += one.resolved
                if message_due(rule, now, settings.alert_digest_hour_utc):
                    result.messages += compose(conn, rule, settings, now)
            except psycopg.Error as exc:
                log.warning("alert rule %s failed: %s", rule["name"], exc)
                result.errors.append(f"rule {rule['name']}: {exc}"[:300])
        with conn.transaction():
            prune_seen(conn, now)


def run_once(pool: ConnectionPool, settings: Settings, now: datetime) -> PassResult:
    """Evaluate, compose, deliver. Raises only when the database is unreachable."""
    result = PassResult()
    started = time.monotonic()
    try:
        evaluate_all(pool, settings, now, result)
    except psycopg.OperationalError as exc:  # the outbox pass below will say it too
        result.errors.append(f"evaluate: {exc}"[:300])
    result.evaluate_ms = int((time.monotonic() - started) * 1000)
    started = time.monotonic()
    result.delivery = deliver_due(pool, settings, now)
    result.deliver_ms = int((time.monotonic() - started) * 1000)
    return result
