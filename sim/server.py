"""HTTP server: `/route/rest` for the API, `/_sim/*` admin endpoints, and `SimServer`."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from sim.config import SimConfig
from sim.model import Dispatch, Fleet
from sim.protocol import Faults, JimiApi, SimRequest

log = logging.getLogger(__name__)


class _HTTPServer(ThreadingHTTPServer):
    """Threaded HTTP server with a deep accept queue for load tests."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 4096
    sim: SimServer


class _RequestHandler(BaseHTTPRequestHandler):
    """Routes `/route/rest` to the API and `/_sim/*` to the admin endpoints."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms stalls
    server_version = "nginx"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Send access logs to the module logger at DEBUG."""
        log.debug("%s %s", self.address_string(), format % args)

    @property
    def _sim(self) -> SimServer:
        return cast(_HTTPServer, self.server).sim

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self._send(status, body, "application/json;charset=UTF-8")

    def do_POST(self) -> None:
        """API and admin POSTs."""
        url = urlsplit(self.path)
        raw = self._body()
        if url.path == "/route/rest":
            query = parse_qs(url.query, keep_blank_values=True)
            query.update(parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True))
            params = {k: v[-1] for k, v in query.items()}
            status, payload = self._sim.api.handle(params)
            if isinstance(payload, str):
                self._send(status, payload.encode(), "text/html")
            else:
                self._send_json(status, payload)
        elif url.path == "/_sim/faults":
            try:
                values = json.loads(raw or b"{}")
                if not isinstance(values, dict):
                    raise ValueError("body must be a JSON object")
                self._sim.faults.update(values)
            except (ValueError, TypeError) as exc:
                self._send_json(400, {"ok": False, "error": str(exc)})
                return
            self._send_json(200, {"ok": True, **self._sim.faults.as_dict()})
        elif url.path == "/_sim/dispatch":
            try:
                values = json.loads(raw or b"{}")
                if not isinstance(values, dict):
                    raise ValueError("body must be a JSON object")
                errand = self._sim.dispatch(
                    str(values["imei"]), float(values["lat"]), float(values["lng"]),
                    int(values.get("dwell_s", 900)), float(values.get("speed_kmh", 30)),
                )  # fmt: skip
            except (ValueError, TypeError, KeyError) as exc:
                self._send_json(400, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
                return
            self._send_json(200, {"ok": True, "arrive": errand.arrive, "leave": errand.leave,
                                  "back": errand.back})  # fmt: skip
        elif url.path == "/_sim/expire-tokens":
            self._sim.expire_all_tokens()
            self._send_json(200, {"ok": True})
        elif url.path == "/_sim/clear-requests":
            self._sim.clear_requests()
            self._send_json(200, {"ok": True})
        else:
            self._send_json(404, {"code": 404, "message": "not found"})

    def do_GET(self) -> None:
        """Admin GETs (health, faults); the API itself only answers POST."""
        path = urlsplit(self.path).path
        if path == "/_sim/health":
            self._send_json(200, {"ok": True, "devices": len(self._sim.fleet.devices())})
        elif path == "/_sim/faults":
            self._send_json(200, self._sim.faults.as_dict())
        elif path == "/route/rest":
            self._send(405, b"Method Not Allowed", "text/plain")
        else:
            self._send_json(404, {"code": 404, "message": "not found"})


class SimServer:
    """The simulator on a loopback port, served from a daemon thread."""

    def __init__(
        self, config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or SimConfig()
        self.host = host
        self.port = port
        self.fleet = Fleet(self.config)
        self.faults = Faults.from_config(self.config)
        self.api = JimiApi(self.config, self.fleet, self.faults)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """`http://host:port` (admin endpoints live under `/_sim/`)."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The API endpoint `http://host:port/route/rest`."""
        return f"{self.base_url}/route/rest"

    @property
    def requests(self) -> list[SimRequest]:
        """Snapshot of every API call received."""
        return self.api.requests

    def clear_requests(self) -> None:
        """Forget recorded calls."""
        self.api.clear_requests()

    def dispatch(
        self, imei: str, lat: float, lng: float, dwell_s: int = 900, speed_kmh: float = 30.0
    ) -> Dispatch:
        """Send a vehicle to a site now (the simulator's clock): see `Fleet.dispatch`."""
        if not (-90 <= lat <= 90 and -180 <= lng <= 180) or not 0 <= dwell_s <= 86_400:
            raise ValueError("lat/lng out of range or dwell_s not in 0..86400")
        if not 1 <= speed_kmh <= 200:
            raise ValueError("speed_kmh must be between 1 and 200")
        start = datetime.fromtimestamp(self.api.clock(), UTC)
        return self.fleet.dispatch(imei, lat, lng, start, dwell_s, speed_kmh)

    def expire_all_tokens(self) -> None:
        """Make every issued token invalid (next call answers 1004)."""
        self.api.expire_all_tokens()

    def start(self) -> SimServer:
        """Bind and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            return self
        httpd = _HTTPServer((self.host, self.port), _RequestHandler)
        httpd.sim = self
        self.port = int(httpd.server_address[1])
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="jimi-sim", daemon=True
        )
        self._thread.start()
        log.info("jimi_sim serving %d devices on %s", len(self.fleet.devices()), self.url)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
