"""Read-API for tickets: the INC dashboard payload and the map, as the read-only role."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool
from pydantic import SecretStr

import import_tickets
from dashboard import tickets
from tests.conftest import router_client
from tickets_import.sample import ticket, to_csv
from ts_shared import Settings


def eat_text(moment: datetime) -> str:
    return (moment + timedelta(hours=3)).strftime("%Y-%m-%d %H:%M:%S")


@pytest.fixture
def client(
    settings: Settings, pool: ConnectionPool, ro_pool: ConnectionPool, tmp_path: Path
) -> TestClient:
    now = datetime.now(UTC)
    path = tmp_path / "inc.csv"
    path.write_bytes(
        to_csv(
            [
                ticket(
                    "A1",
                    created_at_service=eat_text(now - timedelta(hours=5)),
                    latitude="-1.29",
                    longitude="36.78",
                ),
                ticket(
                    "A2",
                    raw_status="PENDING",
                    created_at_service=eat_text(now - timedelta(hours=70)),
                    latitude="-1.30",
                    longitude="36.79",
                ),
                ticket(
                    "A3",
                    cluster="Nyali",
                    region="Mombasa",
                    created_at_service="",
                    first_seen_at=eat_text(now - timedelta(hours=1)),
                ),  # no point: unmapped
                ticket(
                    "C1",
                    raw_status="CLOSED",
                    closed_at=eat_text(now - timedelta(days=2)),
                    mttr="90",
                    sla_status="Met",
                    latitude="-1.28",
                    longitude="36.80",
                ),
                ticket(
                    "C2",
                    raw_status="RESOLVED",
                    closed_at=eat_text(now - timedelta(days=20)),
                    mttr="30",
                    latitude="-1.28",
                    longitude="36.80",
                ),
            ]
        )
    )
    code = import_tickets.run(
        ["--inc-csv", str(path), "--apply"], settings, pool, out=io.StringIO()
    )
    assert code == 0
    client: TestClient = router_client(tickets.router, settings, ro_pool)
    return client


def ids(collection: dict[str, Any]) -> list[str]:
    assert collection["type"] == "FeatureCollection"
    return [f["properties"]["ticket_id"] for f in collection["features"]]


def test_inc_dashboard_payload(client: TestClient) -> None:
    response = client.get("/analytics/inc-dashboard")
    assert response.status_code == 200, response.text
    body = response.json()
    assert ids(body["open"]) == ["A2", "A1"]  # oldest first; A3 has no point
    assert ids(body["closed"]) == ["C1"]  # C2 closed 20 days ago: outside 7d
    a2 = body["open"]["features"][1 - 1]
    assert a2["geometry"] == {"type": "Point", "coordinates": [36.79, -1.3]}
    assert a2["properties"]["derived_sla_status"] == "breached"
    assert a2["properties"]["bucket"] == "pending"
    m = body["metrics"]
    assert (m["open_total"], m["open_actionable"], m["open_pending"]) == (3, 2, 1)
    assert (m["open_breached"], m["open_unmapped"], m["closed_in_window"]) == (1, 1, 1)
    assert m["mttr_min_median"] == 90
    assert m["closed_by_sla_status"] == {"Met": 1}
    assert {c["cluster"]: c["open"] for c in m["by_cluster"]} == {"Kilimani": 2, "Nyali": 1}
    assert body["freshness"]["tickets_total"] == 5
    assert body["params"]["window"] == "7d"

    params = {"window": "30d", "cluster": "Kilimani", "status": "actionable"}
    wide = client.get("/analytics/inc-dashboard", params=params).json()
    assert ids(wide["closed"]) == ["C1", "C2"]
    assert ids(wide["open"]) == ["A1"]
    frm = (datetime.now(UTC) - timedelta(days=25)).isoformat()
    to = (datetime.now(UTC) - timedelta(days=10)).isoformat()
    custom = client.get("/analytics/inc-dashboard", params={"from": frm, "to": to}).json()
    assert custom["params"]["window"] == "custom" and ids(custom["closed"]) == ["C2"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"window": "1y"}, "window must be one of 24h, 7d, 30d, 90d, custom (got '1y')"),
        ({"window": "2y"}, "window must be one of 24h, 7d, 30d, 90d, custom (got '2y')"),
        (
            {"status": "bogus"},
            "status must be one of all, open, pending, actionable, breached, new, assigned,"
            " in_progress, other (got 'bogus')",
        ),
        ({"window": "custom"}, "window=custom needs both 'from' and 'to'"),
        (
            {"from": "2026-06-10T00:00:00Z", "to": "2026-06-01T00:00:00Z"},
            "'from' (2026-06-10T00:00:00Z) must be before 'to' (2026-06-01T00:00:00Z)",
        ),
        (
            {"from": "2024-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
            "the date range is limited to 366 days (got 731 days)",
        ),
        (
            {"from": "not-a-date"},
            "from: 'not-a-date' is not a date or time (use YYYY-MM-DD or ISO-8601 such as"
            " 2026-11-20T08:00:00+03:00)",
        ),
        ({"from": "2026-02-30", "to": "2026-03-02"}, "from: '2026-02-30' is not a valid date"),
        (
            {"from": "0001-01-01T00:00:00"},
            "from: '0001-01-01T00:00:00' is outside the supported dates 2000-01-01 to 2099-12-31",
        ),
        ({"cluster": "Atlantis"}, 'unknown cluster "Atlantis" — see /analytics/filters'),
        ({"cluster": "Kili\x00mani"}, "cluster contains a control character"),
        ({"cluster": "k" * 201}, "cluster is too long (at most 200 characters, got 201)"),
    ],
)
def test_bad_parameters_are_422(client: TestClient, params: dict[str, str], message: str) -> None:
    """One sentence, FastAPI's validation list never (it was `{"detail": [{"type": ...}]}`)."""
    response = client.get("/analytics/inc-dashboard", params=params)
    assert response.status_code == 422
    body = response.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str)
    assert body["detail"].startswith(message), body


def test_cluster_is_case_insensitive_and_dates_are_echoed(client: TestClient) -> None:
    body = client.get("/analytics/inc-dashboard", params={"cluster": " kilimani "}).json()
    assert ids(body["open"]) == ["A2", "A1"] and body["params"]["cluster"] == "kilimani"
    assert client.get("/analytics/inc-dashboard", params={"cluster": "all"}).status_code == 200
    today = datetime.now(UTC).date()
    frm, to = (today - timedelta(days=25)).isoformat(), (today - timedelta(days=10)).isoformat()
    custom = client.get("/analytics/inc-dashboard", params={"from": frm, "to": to}).json()
    assert (custom["params"]["from"], custom["params"]["to"]) == (frm, to)  # as given
    assert ids(custom["closed"]) == ["C2"]
    # Without from/to, the computed window is reported.
    default = client.get("/analytics/inc-dashboard").json()["params"]
    assert default["from"].endswith("+00:00") and default["to"].endswith("+00:00")


def test_tickets_map_and_api_key(client: TestClient, settings: Settings) -> None:
    body = client.get("/analytics/tickets-map").json()
    assert ids(body) == ["A2", "A1"]
    assert body["summary"]["open_total"] == 3 and body["summary"]["open_mapped"] == 2
    assert body["summary"]["by_bucket"] == {"open": 2, "pending": 1, "closed": 2}
    assert "source_max_key" in body["summary"]["freshness"]
    client.app.state.settings = settings.model_copy(update={"dashboard_api_keys": SecretStr("k1")})  # type: ignore[attr-defined]
    assert client.get("/analytics/tickets-map").status_code == 401
    assert client.get("/analytics/tickets-map", headers={"X-API-Key": "k1"}).status_code == 200


def test_readonly_role_cannot_read_tickets_tables(ro_pool: ConnectionPool) -> None:
    with ro_pool.connection() as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT count(*) FROM tickets.inc")
