"""Alert rules: the per-kind parameter checks (pure) and the rule table's reads and writes.

`validate_rule` is the one gate for the CLI and the read-API, so a rule in the table always
has the parameters its kind's SQL expects. Failure mode: `RuleError` with one sentence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

SEVERITIES = ("info", "low", "medium", "high", "critical")
CHANNELS = ("webhook", "email")
_EMAIL = re.compile(r"^[^@\s,;<>]{1,64}@[^@\s,;<>]{1,255}$")
_IMEI = re.compile(r"^\d{6,20}$")

# kind → {param: (type, required, low, high)}; numbers are bounded so no rule can make the
# evaluator scan years of history or alert on nonsense.
_NUM = (int, float)
KINDS: dict[str, dict[str, tuple[Any, bool, float | None, float | None]]] = {
    "alarm": {"types": (list, False, 1, 200), "min_severity": (str, False, None, None)},
    "overspeed": {"speed_kmh": (_NUM, True, 1, 400), "min_duration_s": (_NUM, True, 0, 86_400)},
    "device_silent": {"minutes": (_NUM, True, 1, 90 * 1440)},
    "feed_stale": {
        "source": (str, True, None, None),
        "method": (str, True, None, None),
        "minutes": (_NUM, True, 1, 90 * 1440),
    },
    "importer_stale": {"feed": (str, True, None, None), "minutes": (_NUM, True, 1, 90 * 1440)},
    "backup_failed": {"hours": (_NUM, False, 1, 24 * 31)},
    "spool_depth": {"max_files": (_NUM, True, 0, 10_000_000)},
    "geofence": {
        "direction": (str, False, None, None),
        "geofence_ids": (list, False, 1, 1000),
    },
    "out_of_region": {},
}
IMPORTER_FEEDS = ("tickets", "fuel")
DIRECTIONS = ("enter", "exit", "both")


class RuleError(ValueError):
    """A rule (or one of its parameters) is invalid; the message says which and why."""


@dataclass
class Rule:
    """One row of `tracksolid.alert_rules`, validated."""

    name: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    cost_centre: str | None = None
    imei: str | None = None
    channels: list[str] = field(default_factory=lambda: ["webhook"])
    recipients: list[str] = field(default_factory=list)
    cooldown_s: int = 3600
    group_window_s: int = 300
    digest: bool = False
    enabled: bool = True


def _check_param(kind: str, name: str, value: Any, spec: tuple[Any, bool, Any, Any]) -> None:
    typ, _required, low, high = spec
    if isinstance(value, bool) or not isinstance(value, typ):
        raise RuleError(f"{kind}: parameter {name} has the wrong type")
    size = len(value) if isinstance(value, list) else value
    if isinstance(size, (int, float)) and (
        (low is not None and size < low) or (high is not None and size > high)
    ):
        raise RuleError(f"{kind}: parameter {name} must be between {low} and {high}")
    if isinstance(value, list) and not all(
        isinstance(v, (str, int)) and not isinstance(v, bool) and len(str(v)) <= 100 for v in value
    ):
        raise RuleError(f"{kind}: parameter {name} must be a list of short strings or numbers")


def _check_kind_values(kind: str, params: dict[str, Any]) -> None:
    """Enumerated values and combinations the type table cannot express."""
    if kind == "alarm":
        if not params.get("types") and "min_severity" not in params:
            raise RuleError("alarm: give types (alarm type ids) and/or min_severity")
        if "min_severity" in params and params["min_severity"] not in SEVERITIES:
            raise RuleError(f"alarm: min_severity must be one of {', '.join(SEVERITIES)}")
        if params.get("types"):
            params["types"] = [str(v) for v in params["types"]]
    if kind == "importer_stale" and params["feed"] not in IMPORTER_FEEDS:
        raise RuleError(f"importer_stale: feed must be one of {', '.join(IMPORTER_FEEDS)}")
    if kind == "geofence":
        params.setdefault("direction", "both")
        if params["direction"] not in DIRECTIONS:
            raise RuleError(f"geofence: direction must be one of {', '.join(DIRECTIONS)}")
        if "geofence_ids" in params and not all(
            isinstance(v, int) and not isinstance(v, bool) for v in params["geofence_ids"]
        ):
            raise RuleError("geofence: geofence_ids must be integers")
    if kind == "backup_failed":
        params.setdefault("hours", 26)


def validate_params(kind: str, params: Any) -> dict[str, Any]:
    """The parameters of a rule of `kind`, checked and normalised; RuleError otherwise."""
    if kind not in KINDS:
        raise RuleError(f"unknown rule kind {kind!r}; known: {', '.join(KINDS)}")
    if not isinstance(params, dict):
        raise RuleError("params must be a JSON object")
    spec = KINDS[kind]
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise RuleError(f"{kind}: unknown parameter {unknown[0]!r}")
    out = dict(params)
    for name, item in spec.items():
        if name in out:
            _check_param(kind, name, out[name], item)
        elif item[1]:
            raise RuleError(f"{kind}: parameter {name} is required")
    _check_kind_values(kind, out)
    return out


def _int_in(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RuleError(f"{name} must be an integer between {low} and {high}")
    return value


def _text(name: str, value: Any, max_len: int = 200) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise RuleError(f"{name} must be a non-empty text of at most {max_len} characters")
    if any(ord(c) < 32 for c in value):
        raise RuleError(f"{name} must not contain control characters")
    return value.strip()


def validate_rule(data: Any) -> Rule:
    """A `Rule` from a JSON object (API body, CLI arguments); RuleError on anything odd."""
    if not isinstance(data, dict):
        raise RuleError("a rule must be a JSON object")
    allowed = set(Rule.__dataclass_fields__)
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise RuleError(f"unknown rule field {unknown[0]!r}")
    name = _text("name", data.get("name"))
    kind = data.get("kind")
    if name is None or not isinstance(kind, str):
        raise RuleError("a rule needs a name and a kind")
    channels = data.get("channels", ["webhook"])
    if not isinstance(channels, list) or not channels or not set(channels) <= set(CHANNELS):
        raise RuleError(f"channels must be a non-empty list of {', '.join(CHANNELS)}")
    recipients = data.get("recipients", [])
    if (
        not isinstance(recipients, list)
        or len(recipients) > 50
        or not all(isinstance(r, str) and _EMAIL.match(r) for r in recipients)
    ):
        raise RuleError("recipients must be a list of at most 50 e-mail addresses")
    imei = _text("imei", data.get("imei"), 20)
    if imei is not None and not _IMEI.match(imei):
        raise RuleError("imei must be 6-20 digits")
    for flag in ("digest", "enabled"):
        if not isinstance(data.get(flag, False), bool):
            raise RuleError(f"{flag} must be true or false")
    return Rule(
        name=name,
        kind=kind,
        params=validate_params(kind, data.get("params", {})),
        cost_centre=_text("cost_centre", data.get("cost_centre")),
        imei=imei,
        channels=sorted(set(channels)),
        recipients=list(recipients),
        cooldown_s=_int_in("cooldown_s", data.get("cooldown_s", 3600), 0, 604_800),
        group_window_s=_int_in("group_window_s", data.get("group_window_s", 300), 0, 86_400),
        digest=bool(data.get("digest", False)),
        enabled=bool(data.get("enabled", True)),
    )


RULE_COLUMNS = (
    "rule_id, name, kind, params, cost_centre, imei, channels, recipients, cooldown_s,"
    " group_window_s, digest, enabled, watermark, last_message_at, created_at, updated_at"
)


def insert_rule(conn: psycopg.Connection[Any], rule: Rule) -> dict[str, Any]:
    """Insert a validated rule and return its row; RuleError when the name is taken."""
    try:
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"""
                INSERT INTO tracksolid.alert_rules
                    (name, kind, params, cost_centre, imei, channels, recipients, cooldown_s,
                     group_window_s, digest, enabled)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                RETURNING {RULE_COLUMNS}
                """,
                (
                    rule.name,
                    rule.kind,
                    Jsonb(rule.params),
                    rule.cost_centre,
                    rule.imei,
                    rule.channels,
                    rule.recipients,
                    rule.cooldown_s,
                    rule.group_window_s,
                    rule.digest,
                    rule.enabled,
                ),
            )
            row = cur.fetchone()
    except psycopg.errors.UniqueViolation:
        raise RuleError(f"a rule named {rule.name!r} exists already") from None
    assert row is not None
    return row


def list_rules(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Every rule, oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {RULE_COLUMNS} FROM tracksolid.alert_rules ORDER BY rule_id")
        return cur.fetchall()


def set_enabled(conn: psycopg.Connection[Any], key: str, enabled: bool) -> bool:
    """Enable/disable the rule with this id or name; False when there is none."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE tracksolid.alert_rules SET enabled = %s, updated_at = now()"
            " WHERE name = %s OR rule_id::text = %s",
            (enabled, key, key),
        )
    return cur.rowcount > 0
