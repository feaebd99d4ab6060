"""Alerts CLI.

    python -m alerts rules list [--json]                  every rule
    python -m alerts rules add --name N --kind K [--params JSON] [--channels webhook,email]
                               [--recipients a@x,b@y] [--cost-centre CC] [--imei IMEI]
                               [--cooldown-s S] [--group-window-s S] [--digest]
    python -m alerts rules disable NAME_OR_ID             (and `rules enable NAME_OR_ID`)
    python -m alerts test-channel webhook|email [--to a@x]   send a test message now
    python -m alerts run-once                             evaluate, compose, deliver once

docs/alerts.md lists the kinds and their params. Exit status: 0 ok · 1 database or delivery
failure · 2 usage or an invalid rule · 3 no such rule.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, TextIO

from psycopg_pool import ConnectionPool

from alerts import rules as rules_mod
from alerts.channels import send
from alerts.run import run_once
from ts_shared import Settings, setup_logging, split_csv, utcnow, with_cli_pool

log = logging.getLogger("alerts")
EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_MISSING = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    """The CLI's arguments (no database needed for --help and usage errors)."""
    parser = argparse.ArgumentParser(
        prog="python -m alerts",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    rules = sub.add_parser("rules", help="list, add, enable or disable rules")
    rsub = rules.add_subparsers(dest="action", required=True)
    listing = rsub.add_parser("list")
    listing.add_argument("--json", action="store_true")
    add = rsub.add_parser("add")
    add.add_argument("--name", required=True)
    add.add_argument("--kind", required=True, choices=sorted(rules_mod.KINDS))
    add.add_argument("--params", default="{}", help="JSON object, e.g. '{\"minutes\": 60}'")
    add.add_argument("--channels", default="webhook", help="webhook,email")
    add.add_argument("--recipients", default="", help="comma-separated e-mail addresses")
    add.add_argument("--cost-centre")
    add.add_argument("--imei")
    add.add_argument("--cooldown-s", type=int, default=3600)
    add.add_argument("--group-window-s", type=int, default=300)
    add.add_argument("--digest", action="store_true", help="one message a day")
    for action in ("disable", "enable"):
        rsub.add_parser(action).add_argument("rule", help="rule name or id")
    test = sub.add_parser("test-channel", help="send a test message on a channel")
    test.add_argument("channel", choices=rules_mod.CHANNELS)
    test.add_argument("--to", default="", help="recipients (default ALERT_EMAIL_TO)")
    sub.add_parser("run-once", help="evaluate the rules, compose and deliver once")
    return parser


def _rule_from_args(args: argparse.Namespace) -> rules_mod.Rule:
    try:
        params = json.loads(args.params)
    except json.JSONDecodeError as exc:
        raise rules_mod.RuleError(f"--params is not JSON: {exc.msg}") from None
    data: dict[str, Any] = {
        "name": args.name,
        "kind": args.kind,
        "params": params,
        "channels": split_csv(args.channels),
        "recipients": split_csv(args.recipients),
        "cost_centre": args.cost_centre,
        "imei": args.imei,
        "cooldown_s": args.cooldown_s,
        "group_window_s": args.group_window_s,
        "digest": args.digest,
    }
    return rules_mod.validate_rule(data)


def _rules(args: argparse.Namespace, pool: ConnectionPool, out: TextIO) -> int:
    with pool.connection() as conn:
        if args.action == "list":
            rows = rules_mod.list_rules(conn)
            if args.json:
                print(json.dumps(rows, default=str), file=out)
                return EXIT_OK
            for r in rows:
                state = "on " if r["enabled"] else "off"
                print(
                    f"{r['rule_id']:>5} {state} {r['kind']:14} {r['name']}  "
                    f"{json.dumps(r['params'])} → {','.join(r['channels'])}",
                    file=out,
                )
            print(f"{len(rows)} rules", file=out)
            return EXIT_OK
        if args.action == "add":
            try:
                row = rules_mod.insert_rule(conn, _rule_from_args(args))
            except rules_mod.RuleError as exc:
                print(f"invalid rule: {exc}", file=out)
                return EXIT_USAGE
            print(f"added rule {row['rule_id']} ({row['name']})", file=out)
            return EXIT_OK
        if not rules_mod.set_enabled(conn, args.rule, args.action == "enable"):
            print(f"no rule {args.rule!r}", file=out)
            return EXIT_MISSING
        print(f"rule {args.rule} {args.action}d", file=out)
        return EXIT_OK


def test_channel(settings: Settings, channel: str, to: str, out: TextIO) -> int:
    """Send one test message directly (not through the outbox) and say what happened."""
    message_id = uuid.uuid4()
    body = {
        "id": str(message_id),
        "test": True,
        "generated_at": utcnow().isoformat(),
        "digest": False,
        "rule": {"id": None, "name": "test message", "kind": "test"},
        "alert_count": 0,
        "event_count": 0,
        "alerts": [],
        "truncated": 0,
    }
    row = {
        "message_id": message_id,
        "channel": channel,
        "title": "Test alert message",
        "recipients": split_csv(to or settings.alert_email_to),
        "body": body,
    }
    result = send(settings, row)
    status = "delivered" if result.ok else f"FAILED: {result.error}"
    print(f"test message {message_id} via {channel}: {status}", file=out)
    return EXIT_OK if result.ok else EXIT_FAIL


def run(
    argv: Sequence[str] | None,
    settings: Settings,
    pool: ConnectionPool | None,
    out: TextIO | None = None,
) -> int:
    """Run the CLI; `pool` may be None for test-channel. Returns the exit status."""
    args = build_parser().parse_args(argv)
    out = out or sys.stdout
    if args.command == "test-channel":
        return test_channel(settings, args.channel, args.to, out)
    assert pool is not None
    if args.command == "rules":
        return _rules(args, pool, out)
    result = run_once(pool, settings, utcnow())
    print(json.dumps(asdict(result)), file=out)
    return EXIT_FAIL if result.errors else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: settings from the environment, one small pool for the run."""
    args = build_parser().parse_args(argv)
    settings = Settings()
    setup_logging(settings.log_level)
    if args.command == "test-channel":
        return run(argv, settings, None)
    return with_cli_pool(settings, "alerts", lambda pool: run(argv, settings, pool))


if __name__ == "__main__":
    sys.exit(main())
