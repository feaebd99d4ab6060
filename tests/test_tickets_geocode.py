"""Geocoding against a fake LocationIQ server on loopback: cache, retries, wrong-city guard."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from psycopg_pool import ConnectionPool
from pydantic import SecretStr

import import_tickets
from tickets_import.geocode import GeocodeError, Geocoder, GeocoderFatalError
from tickets_import.sample import ticket, to_csv
from ts_shared import Settings


class FakeGeocoder:
    """LocationIQ-style `/search?q=&key=&format=json`; counts requests, can answer 429."""

    def __init__(self) -> None:
        self.places: dict[str, tuple[float, float, str]] = {}
        self.queries: list[str] = []
        self.fail_next = 0  # answer this many requests with 429 first
        self.status_override: int | None = None
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
                fake.queries.append(params.get("q", ""))
                if url.path != "/v1/search" or params.get("key") != "test-key":
                    self._reply(401, {"error": "Invalid key"})
                elif fake.status_override:
                    self._reply(fake.status_override, {"error": "nope"})
                elif fake.fail_next > 0:
                    fake.fail_next -= 1
                    self._reply(429, {"error": "Rate Limited Second"}, retry_after="0")
                elif (hit := fake.places.get(params.get("q", ""))) is None:
                    self._reply(404, {"error": "Unable to geocode"})
                else:
                    lat, lon, name = hit
                    self._reply(200, [{"lat": str(lat), "lon": str(lon), "display_name": name}])

            def _reply(self, status: int, body: Any, retry_after: str | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_geocoder() -> Iterator[FakeGeocoder]:
    fake = FakeGeocoder()
    yield fake
    fake.close()


def make_geocoder(fake: FakeGeocoder, key: str = "test-key") -> Geocoder:
    return Geocoder(
        fake.url, key, rate_per_s=1000, max_attempts=4, backoff_base_s=0.01, backoff_cap_s=0.02
    )


def geo_settings(settings: Settings, fake: FakeGeocoder) -> Settings:
    return settings.model_copy(
        update={
            "geocoder_url": fake.url,
            "geocoder_key": SecretStr("test-key"),
            "geocoder_rate_per_s": 500,
        }
    )


def test_search_retries_429_then_answers_and_treats_404_as_not_found(
    fake_geocoder: FakeGeocoder,
) -> None:
    fake_geocoder.places["Kilimani, Nairobi"] = (-1.29, 36.78, "Kilimani, Nairobi, Kenya")
    fake_geocoder.fail_next = 2
    with make_geocoder(fake_geocoder) as coder:
        hit = coder.search("Kilimani, Nairobi")
        assert hit is not None and (hit.lat, hit.lng) == (-1.29, 36.78)
        assert coder.requests == 3
        assert coder.search("Atlantis") is None
        fake_geocoder.fail_next = 10
        with pytest.raises(GeocodeError, match="gave up"):
            coder.search("Kilimani, Nairobi")
    with make_geocoder(fake_geocoder, key="wrong") as coder, pytest.raises(GeocoderFatalError):
        coder.search("Kilimani, Nairobi")


def test_geocode_clusters_and_locations_cache_guard_and_map(
    settings: Settings, pool: ConnectionPool, fake_geocoder: FakeGeocoder, tmp_path: Path
) -> None:
    csv_path = tmp_path / "inc.csv"
    csv_path.write_bytes(
        to_csv(
            [
                ticket("INC1", cluster="Kilimani", location_name="FDH-023 Argwings Kodhek Rd"),
                ticket("INC2", cluster="Kilimani", location_name="Valley Arcade (NRB_KLM_07)"),
                ticket("INC3", cluster="QOA", location_name="Nowhere Lane"),
                ticket(
                    "INC4",
                    cluster="Kilimani",
                    location_name="Argwings Kodhek Rd",
                    latitude="-1.3",
                    longitude="36.79",
                ),
                ticket(
                    "INC5", cluster="Kilimani", location_name="Closed Street", raw_status="CLOSED"
                ),
            ]
        )
    )
    s = geo_settings(settings, fake_geocoder)
    assert (
        import_tickets.run(["--inc-csv", str(csv_path), "--apply"], s, pool, out=io.StringIO()) == 0
    )
    fake_geocoder.places.update(
        {
            "Kilimani, Nairobi": (-1.2921, 36.7830, "Kilimani, Nairobi"),
            "Quarry Road, Nairobi": (-1.2750, 36.8400, "Quarry Road, Nairobi"),
            "Argwings Kodhek Rd, Nairobi": (-1.2960, 36.7900, "Argwings Kodhek Road, Nairobi"),
            # A "Valley Arcade" in Mombasa: 440 km away, must be rejected.
            "Valley Arcade, Nairobi": (-4.05, 39.66, "Valley Arcade, Mombasa"),
        }
    )
    fake_geocoder.fail_next = 1  # the first request is rate-limited and retried

    # Dry run: counts, no request, no write.
    out = io.StringIO()
    code = import_tickets.run(["--geocode-clusters", "--geocode-locations"], s, pool, out=out)
    assert code == 0 and fake_geocoder.queries == []

    code = import_tickets.run(
        ["--geocode-clusters", "--geocode-locations", "--apply"], s, pool, out=io.StringIO()
    )
    assert code == 0
    assert sorted(set(fake_geocoder.queries)) == [
        "Argwings Kodhek Rd, Nairobi",
        "Kilimani, Nairobi",
        "Nowhere Lane, Nairobi",
        "Quarry Road, Nairobi",
        "Valley Arcade, Nairobi",
    ]
    assert len(fake_geocoder.queries) == 6  # five names + one retried 429
    with pool.connection() as conn:
        clusters: dict[str, str] = dict(
            conn.execute("SELECT cluster, status FROM tickets.geo_clusters").fetchall()
        )
        locations = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT location_name, status, query, round(distance_km) FROM tickets.geo_locations"
            ).fetchall()
        }
        placed = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT ticket_id, geo_source, round(latitude::numeric, 4)::float8 FROM tickets.inc"
            ).fetchall()
        }
    assert clusters == {"Kilimani": "ok", "QOA": "ok"}
    assert locations["FDH-023 Argwings Kodhek Rd"][:2] == ("ok", "Argwings Kodhek Rd, Nairobi")
    assert locations["Valley Arcade (NRB_KLM_07)"][0] == "wrong_city"
    assert locations["Valley Arcade (NRB_KLM_07)"][2] > 400
    assert locations["Nowhere Lane"][0] == "not_found"
    assert "Closed Street" not in locations  # not actionable: not geocoded precisely
    assert "Argwings Kodhek Rd" not in locations  # the feed has a point
    assert placed["INC1"] == ("location", -1.296)
    assert placed["INC2"] == ("cluster", -1.2921)  # wrong-city hit not used
    assert placed["INC3"] == ("cluster", -1.275)  # QOA → Quarry Road
    assert placed["INC4"] == ("feed", -1.3)
    assert placed["INC5"] == ("cluster", -1.2921)

    # Everything is cached, misses included: a second run sends nothing.
    before = len(fake_geocoder.queries)
    code = import_tickets.run(
        ["--geocode-clusters", "--geocode-locations", "--apply"], s, pool, out=io.StringIO()
    )
    assert code == 0 and len(fake_geocoder.queries) == before

    # A re-imported ticket keeps its geocoded point (the trigger reads the caches).
    assert (
        import_tickets.run(["--inc-csv", str(csv_path), "--apply"], s, pool, out=io.StringIO()) == 0
    )
    with pool.connection() as conn:
        row = conn.execute("SELECT geo_source FROM tickets.inc WHERE ticket_id='INC1'").fetchone()
    assert row == ("location",)


def test_bad_key_stops_geocoding_with_failure_exit(
    settings: Settings, pool: ConnectionPool, fake_geocoder: FakeGeocoder, tmp_path: Path
) -> None:
    csv_path = tmp_path / "inc.csv"
    csv_path.write_bytes(to_csv([ticket("INC1")]))
    s = geo_settings(settings, fake_geocoder).model_copy(update={"geocoder_key": SecretStr("bad")})
    assert (
        import_tickets.run(["--inc-csv", str(csv_path), "--apply"], s, pool, out=io.StringIO()) == 0
    )
    out = io.StringIO()
    code = import_tickets.run(["--geocode-clusters", "--apply"], s, pool, out=out)
    assert code == import_tickets.EXIT_FAILED
    assert "failed=GeocoderFatalError" in out.getvalue()
    assert "bad" not in out.getvalue().replace("failed=", "")  # the key is never printed
