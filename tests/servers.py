"""A real uvicorn server for an ASGI app, in a thread of the test process, on loopback."""

from __future__ import annotations

import threading
import time

import uvicorn


def serve_in_thread(
    app: object, port: int, timeout: float = 20.0
) -> tuple[uvicorn.Server, threading.Thread]:
    """Start `app` on 127.0.0.1:`port` and return once it accepts connections. Stop it with
    `server.should_exit = True; thread.join()`."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    return server, thread
