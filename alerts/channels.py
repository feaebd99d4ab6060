"""The two channels: a signed outbound webhook (httpx) and e-mail over SMTP (smtplib).

Both take one outbox row and return a `SendResult`; neither raises for a failed delivery
(the outbox records it and retries). Secrets come only from `Settings` (the environment)
and never appear in a result, a log line or an exception text.

Webhook request: `POST ALERT_WEBHOOK_URL`, body = the message JSON (UTF-8, compact), headers
`X-Alert-Id` (the message id: deduplicate on it), `X-Alert-Timestamp` (Unix seconds) and
`X-Alert-Signature: sha256=<hex HMAC-SHA256(ALERT_WEBHOOK_SECRET, "<timestamp>.<body>")>`.
Any 2xx is success; anything else (or a network error) is retried with backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import httpx

from ts_shared import Settings

log = logging.getLogger(__name__)

USER_AGENT = "tracksolid-alerts/1.0"


@dataclass
class SendResult:
    """Outcome of one attempt. `permanent` failures are not retried (configuration)."""

    ok: bool
    status_code: int | None = None
    error: str | None = None
    permanent: bool = False


def encode_body(body: Any) -> bytes:
    """The exact bytes sent (and signed): compact JSON, keys sorted, UTF-8."""
    return json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256 over `<timestamp>.<body>` (docs/alerts.md)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    max_age_s: float = 300,
    now: float | None = None,
) -> bool:
    """What a receiver does: constant-time compare, and refuse stale timestamps (replays)."""
    try:
        age = abs((now if now is not None else time.time()) - int(timestamp))
    except ValueError:
        return False
    return age <= max_age_s and hmac.compare_digest(sign(secret, timestamp, body), signature)


def send_webhook(settings: Settings, row: dict[str, Any]) -> SendResult:
    """POST the message to ALERT_WEBHOOK_URL, signed; permanent failure when unconfigured."""
    url = settings.alert_webhook_url
    secret = settings.alert_webhook_secret
    if not url or secret is None or not secret.get_secret_value():
        return SendResult(
            False, error="ALERT_WEBHOOK_URL / ALERT_WEBHOOK_SECRET not set", permanent=True
        )
    body = encode_body(row["body"])
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Alert-Id": str(row["message_id"]),
        "X-Alert-Timestamp": timestamp,
        "X-Alert-Signature": sign(secret.get_secret_value(), timestamp, body),
    }
    try:
        reply = httpx.post(
            url, content=body, headers=headers, timeout=settings.alert_send_timeout_s
        )
    except httpx.HTTPError as exc:
        # The URL may carry credentials or a token: never copy it into the stored error.
        text = str(exc).replace(url, "<ALERT_WEBHOOK_URL>")
        return SendResult(False, error=f"{type(exc).__name__}: {text}"[:500])
    if 200 <= reply.status_code < 300:
        return SendResult(True, reply.status_code)
    return SendResult(False, reply.status_code, f"HTTP {reply.status_code}")


def render_text(body: dict[str, Any]) -> str:
    """The e-mail text of a message: one line per alert, then the JSON for machines."""
    rule = body.get("rule", {})
    lines = [
        f"Rule: {rule.get('name')} ({rule.get('kind')})",
        f"Alerts: {body.get('alert_count')} · events: {body.get('event_count')}"
        + (" · daily digest" if body.get("digest") else ""),
        "",
    ]
    for alert in body.get("alerts", []):
        payload = alert.get("payload") or {}
        who = payload.get("vehicle") or alert.get("subject")
        facts = ", ".join(
            f"{k}={v}" for k, v in payload.items() if v is not None and k != "vehicle"
        )
        lines.append(f"- {who}: x{alert.get('count')} {alert.get('last_seen')} {facts}")
    if body.get("truncated"):
        lines.append(f"... and {body['truncated']} more")
    return "\n".join(lines) + "\n"


def build_email(settings: Settings, row: dict[str, Any]) -> EmailMessage:
    """The message; `Message-ID` derives from the alert id so mail systems can deduplicate."""
    msg = EmailMessage()
    msg["From"] = settings.smtp_from
    msg["To"] = ", ".join(row["recipients"])
    msg["Subject"] = row["title"]
    msg["X-Alert-Id"] = str(row["message_id"])
    msg["Message-ID"] = make_msgid(idstring=str(row["message_id"]), domain="alerts.invalid")
    msg.set_content(render_text(row["body"]))
    return msg


def send_email(settings: Settings, row: dict[str, Any]) -> SendResult:
    """Send over SMTP (STARTTLS unless SMTP_STARTTLS=0, login when SMTP_USER is set)."""
    if not settings.smtp_host or not settings.smtp_from:
        return SendResult(False, error="SMTP_HOST / SMTP_FROM not set", permanent=True)
    if not row["recipients"]:
        return SendResult(
            False, error="no recipients (rule recipients or ALERT_EMAIL_TO)", permanent=True
        )
    msg = build_email(settings, row)
    try:
        with smtplib.SMTP(
            settings.smtp_host, settings.smtp_port, timeout=settings.alert_send_timeout_s
        ) as smtp:
            smtp.ehlo()
            if settings.smtp_starttls:
                context = ssl.create_default_context(cafile=settings.smtp_ca_file or None)
                smtp.starttls(context=context)
                smtp.ehlo()
            if settings.smtp_user:
                secret = settings.smtp_password
                password = secret.get_secret_value() if secret else ""
                smtp.login(settings.smtp_user, password)
            smtp.send_message(msg)
    except smtplib.SMTPResponseException as exc:
        # Retried like a network error: a relay's 5xx is often a configuration being fixed;
        # ALERT_MAX_ATTEMPTS bounds it. Only the code is kept (the text may echo addresses).
        return SendResult(False, exc.smtp_code, f"SMTP {exc.smtp_code}")
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        return SendResult(False, error=f"{type(exc).__name__}: {exc}"[:500])
    return SendResult(True, 250)


def send(settings: Settings, row: dict[str, Any]) -> SendResult:
    """Deliver one outbox row on its channel."""
    if row["channel"] == "webhook":
        return send_webhook(settings, row)
    return send_email(settings, row)
