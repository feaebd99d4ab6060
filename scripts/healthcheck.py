"""Container health checks (used by the Dockerfile and docker-compose.yaml).

    python scripts/healthcheck.py http http://127.0.0.1:8000/health
    python scripts/healthcheck.py worker        # a live-positions run finished < 5 min ago

Exit 0 healthy, 1 unhealthy (reason on stderr). Uses only the standard library + psycopg.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def check_http(url: str) -> str | None:
    """None when the URL answers 2xx within 4 s."""
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 - fixed local URL
            return None if 200 <= response.status < 300 else f"HTTP {response.status}"
    except OSError as exc:
        return str(exc)


def check_worker(max_age_s: int = 300) -> str | None:
    """None when the worker's live sweep finished recently (it writes a job row each run)."""
    import psycopg  # noqa: PLC0415

    try:
        with psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT extract(epoch FROM now() - max(logged_at)) FROM tracksolid.ingestion_log"
                " WHERE source = 'job' AND method = 'live_positions'"
            ).fetchone()
    except (psycopg.Error, KeyError) as exc:
        return f"database: {exc}"
    if row is None or row[0] is None:
        return "no live-positions run recorded yet"
    return None if float(row[0]) < max_age_s else f"last live sweep {int(row[0])} s ago"


def main(argv: list[str]) -> int:
    """Run the requested check."""
    if len(argv) >= 2 and argv[0] == "http":
        problem = check_http(argv[1])
    elif argv and argv[0] == "worker":
        problem = check_worker()
    else:
        sys.stderr.write(__doc__ or "")
        return 2
    if problem:
        sys.stderr.write(f"unhealthy: {problem}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
