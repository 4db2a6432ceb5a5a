"""Run the app under a real uvicorn server on a loopback port, in a background thread, with the connection limits
and timeouts `rag serve` uses (serving.connections)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from serving.connections import connection_options


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running(app: FastAPI, port: int | None = None) -> Iterator[str]:
    """The app's URL while it serves; ``port`` when the address must be known first (an OIDC redirect URI)."""
    port = port or free_port()
    settings = app.state.container.settings
    options = connection_options(settings.server, bool(settings.auth.proxy.trusted))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
