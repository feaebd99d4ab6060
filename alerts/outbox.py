"""Messages: composing alerts into the durable outbox, and delivering it exactly once.

Compose (per rule, one statement): the rule's alerts that need telling are marked notified
and become one message per channel — so a burst is one message, not one per event:
- not more than one message per rule per `group_window_s` (the first alert of a quiet rule
  goes out at once; what follows within the window waits for the next message);
- a subject told within `cooldown_s` is not told again (new alert or repeats of an open one);
- `digest` rules get one message a day, after ALERT_DIGEST_HOUR_UTC, with everything new.

Deliver: one outbox row at a time, locked `FOR UPDATE SKIP LOCKED` (two workers never send
the same row), sent, and the attempt recorded and the row marked delivered (or rescheduled
with capped exponential backoff and jitter) in that same transaction. If the process dies
after the receiver answered 2xx but before the commit, the row is sent again on the next
run: delivery is at-least-once at that edge, and the receiver deduplicates on `X-Alert-Id`
(the message id, identical on every attempt; e-mails carry it and a derived Message-ID).
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from alerts.channels import SendResult, send
from ts_shared import Settings, split_csv

log = logging.getLogger(__name__)

MAX_ALERTS_IN_MESSAGE = 200  # the rest is counted in `truncated`
DELIVERY_BUDGET_S = 30.0  # a pass stops sending after this long (worker threads are shared)

# Which alerts a message takes. Immediate: open alerts never told (unless the subject was
# told within the cooldown) or with new events since they were told, past the cooldown.
_PICK_IMMEDIATE = """
    a.state = 'open' AND (
        (a.notified_at IS NULL AND NOT EXISTS (
            SELECT 1 FROM tracksolid.alerts b
            WHERE b.rule_id = a.rule_id AND b.subject = a.subject
              AND b.notified_at > %(now)s - %(cooldown_s)s * interval '1 second'))
        OR (a.notified_at IS NOT NULL AND a.count > a.notified_count
            AND a.notified_at <= %(now)s - %(cooldown_s)s * interval '1 second'))"""
# Digest: everything not yet told, whatever its state now.
_PICK_DIGEST = "(a.notified_at IS NULL OR a.count > a.notified_count)"

COMPOSE_SQL = """
WITH picked AS (
    UPDATE tracksolid.alerts a SET notified_at = %(now)s, notified_count = a.count
    WHERE a.rule_id = %(rule_id)s AND {pick}
    RETURNING a.alert_id, a.subject, a.state, a.first_seen, a.last_seen, a.count, a.payload
), ranked AS (
    SELECT p.*, row_number() OVER (ORDER BY p.last_seen DESC, p.alert_id) AS rn FROM picked p
), msg AS (
    SELECT array_agg(alert_id ORDER BY alert_id) AS ids, count(*) AS n, sum(count) AS events,
           jsonb_agg(jsonb_build_object('id', alert_id, 'subject', subject, 'state', state,
                         'first_seen', first_seen, 'last_seen', last_seen, 'count', count,
                         'payload', payload) ORDER BY rn) FILTER (WHERE rn <= %(cap)s) AS alerts
    FROM ranked
    HAVING count(*) > 0
), ins AS (
    INSERT INTO tracksolid.alert_outbox
        (message_id, channel, rule_id, alert_ids, recipients, title, body, next_attempt_at)
    SELECT %(message_id)s, ch, %(rule_id)s, msg.ids,
           CASE WHEN ch = 'email' THEN %(recipients)s::text[] ELSE '{{}}' END,
           format('%%s%%s: %%s alert%%s', CASE WHEN %(digest)s THEN 'Daily digest · ' ELSE '' END,
                  %(name)s::text, msg.n, CASE WHEN msg.n = 1 THEN '' ELSE 's' END),
           jsonb_build_object(
               'id', %(message_id)s::text, 'generated_at', %(now)s, 'digest', %(digest)s,
               'rule', jsonb_build_object('id', %(rule_id)s, 'name', %(name)s::text,
                                          'kind', %(kind)s::text),
               'alert_count', msg.n, 'event_count', msg.events, 'alerts', msg.alerts,
               'truncated', greatest(msg.n - %(cap)s, 0)),
           %(now)s
    FROM msg, unnest(%(channels)s::text[]) AS ch
    RETURNING outbox_id
)
UPDATE tracksolid.alert_rules SET last_message_at = %(now)s
WHERE rule_id = %(rule_id)s AND EXISTS (SELECT 1 FROM msg)
RETURNING (SELECT count(*) FROM ins)
"""


@dataclass
class DeliveryStats:
    """What one delivery pass did."""

    delivered: int = 0
    failed: int = 0
    given_up: int = 0


def digest_due(rule: dict[str, Any], now: datetime, hour_utc: int) -> bool:
    """True once a day: after today's digest hour, when no digest was composed since."""
    now = now.astimezone(UTC)
    today = now.replace(hour=hour_utc, minute=0, second=0, microsecond=0)
    last = rule["last_message_at"]
    return now >= today and (last is None or last < today)


def message_due(rule: dict[str, Any], now: datetime, digest_hour_utc: int) -> bool:
    """Whether the rule may send a message now (group window / digest time)."""
    if rule["digest"]:
        return digest_due(rule, now, digest_hour_utc)
    last = rule["last_message_at"]
    return last is None or now - last >= timedelta(seconds=rule["group_window_s"])


def compose(
    conn: psycopg.Connection[Any], rule: dict[str, Any], settings: Settings, now: datetime
) -> int:
    """Put the rule's pending alerts into one outbox message per channel; outbox rows made."""
    recipients = list(rule["recipients"]) or split_csv(settings.alert_email_to)
    args = {
        "now": now,
        "rule_id": rule["rule_id"],
        "cooldown_s": rule["cooldown_s"],
        "cap": MAX_ALERTS_IN_MESSAGE,
        "message_id": uuid.uuid4(),
        "recipients": recipients,
        "digest": rule["digest"],
        "name": rule["name"],
        "kind": rule["kind"],
        "channels": list(rule["channels"]),
    }
    pick = _PICK_DIGEST if rule["digest"] else _PICK_IMMEDIATE
    with conn.transaction():
        row = conn.execute(COMPOSE_SQL.format(pick=pick), args).fetchone()
    return int(row[0]) if row else 0


def backoff(settings: Settings, attempts: int) -> timedelta:
    """Capped exponential backoff with ±20 % jitter after `attempts` failed attempts."""
    base = settings.alert_retry_base_s * 2 ** min(attempts - 1, 30)
    delay = min(settings.alert_retry_cap_s, base) * random.uniform(0.8, 1.2)
    return timedelta(seconds=delay)


_NEXT_SQL = """
SELECT outbox_id, message_id, channel, recipients, title, body, attempts
FROM tracksolid.alert_outbox
WHERE delivered_at IS NULL AND given_up_at IS NULL AND next_attempt_at <= %s
  AND NOT (outbox_id = ANY(%s))
ORDER BY next_attempt_at, outbox_id
LIMIT 1
FOR UPDATE SKIP LOCKED
"""


def _record(
    conn: psycopg.Connection[Any],
    row: dict[str, Any],
    result: SendResult,
    now: datetime,
    duration_ms: int,
    settings: Settings,
) -> str:
    """Write the attempt and the row's new state; returns delivered | failed | given_up."""
    conn.execute(
        "INSERT INTO tracksolid.alert_deliveries"
        " (outbox_id, attempted_at, ok, status_code, error, duration_ms)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (row["outbox_id"], now, result.ok, result.status_code, result.error, duration_ms),
    )
    attempts = row["attempts"] + 1
    values: tuple[str | None, datetime | None, datetime | None]
    if result.ok:
        outcome, values = "delivered", (None, now, None)
    elif result.permanent or attempts >= settings.alert_max_attempts:
        outcome, values = "given_up", (result.error, None, now)
    else:
        outcome, values = "failed", (result.error, None, None)
    conn.execute(
        "UPDATE tracksolid.alert_outbox SET attempts = %s, last_error = %s, delivered_at = %s,"
        " given_up_at = %s, next_attempt_at = %s WHERE outbox_id = %s",
        (attempts, *values, now + backoff(settings, attempts), row["outbox_id"]),
    )
    return outcome


def deliver_due(
    pool: ConnectionPool,
    settings: Settings,
    now: datetime,
    limit: int = 100,
    budget_s: float = DELIVERY_BUDGET_S,
) -> DeliveryStats:
    """Send due outbox rows (each at most once per pass), one transaction per row. Stops
    after `budget_s` so a hanging receiver cannot hold a worker thread for long; what is
    left waits for the next pass."""
    stats = DeliveryStats()
    tried: list[int] = []
    deadline = time.monotonic() + budget_s
    for _ in range(limit):
        if time.monotonic() > deadline:
            break
        with pool.connection() as conn, conn.transaction():
            with conn.cursor(row_factory=dict_row) as cur:
                row = cur.execute(_NEXT_SQL, (now, tried)).fetchone()
            if row is None:
                break
            tried.append(row["outbox_id"])
            started = time.monotonic()
            result = send(settings, row)
            duration_ms = int((time.monotonic() - started) * 1000)
            outcome = _record(conn, row, result, now, duration_ms, settings)
        log.info(
            "alert message %s via %s: %s (attempt %d%s)",
            row["message_id"],
            row["channel"],
            outcome,
            row["attempts"] + 1,
            f", {result.error}" if result.error else "",
        )
        setattr(stats, outcome, getattr(stats, outcome) + 1)
    return stats
