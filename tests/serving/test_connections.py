"""Slow and greedy clients on a real uvicorn server on loopback (the options `rag serve` uses), with raw sockets.

Timeouts are set to 1 s here so each test ends within a few seconds; every wait is bounded.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from rag.container import Container
from rag.settings import load_settings
from rag.store import ChromaStore
from serving.app import create_app
from tests.fakes import EchoEngine, HashEmbedder
from tests.serving.server import running

SLACK_S = 3.0  # the server must act within its timeout plus this


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def read_until_closed(sock: socket.socket, within: float) -> bytes:
    """All the server sends until it closes the connection; fails if it is still open after ``within`` seconds."""
    deadline = time.monotonic() + within
    received = b""
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"the server kept the connection open for {within:.0f} s; it sent {received[:200]!r}"
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return received
        if not data:
            return received
        received += data


def trickle(sock: socket.socket, data: bytes, every: float, within: float) -> tuple[bytes, int]:
    """Send ``data`` a byte at a time until the server answers or closes; (what it sent, bytes we got out)."""
    deadline = time.monotonic() + within
    sent = 0
    while sent < len(data):
        assert time.monotonic() < deadline, f"the server took {sent} bytes over {within:.0f} s without cutting us off"
        try:
            sock.sendall(data[sent : sent + 1])
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += 1
        sock.settimeout(every)
        try:
            first = sock.recv(65536)
        except TimeoutError:
            continue
        return first + read_until_closed(sock, SLACK_S), sent
    return read_until_closed(sock, SLACK_S), sent


def problem_of(response: bytes) -> tuple[int, dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), response[:300]
    return int(head.split(b" ", 2)[1]), json.loads(body)


@pytest.fixture
def limited_url(tmp_path) -> Iterator[str]:
    limits = {"keep_alive_timeout_s": 1, "header_timeout_s": 1, "body_timeout_s": 1, "body_min_bytes_per_s": 1000}
    settings = load_settings(
        data_dir=tmp_path / "data",
        server={"allow_anonymous": True, "max_connections_per_client": 3, **limits},
    )
    container = Container(settings, HashEmbedder(), EchoEngine(), ChromaStore(settings.data_dir / "chroma", "test"))
    container.load()
    with running(create_app(container=container)) as url:
        yield url


def test_an_idle_connection_is_closed(limited_url):
    with connect(limited_url) as sock:  # never sends a byte
        assert read_until_closed(sock, 1.0 + SLACK_S) == b""
    with connect(limited_url) as sock:  # idle after a response: uvicorn's keep-alive timeout
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert b'{"status":"ok"}' in read_until_closed(sock, 1.0 + SLACK_S)


def test_a_trickled_request_head_gets_408(limited_url):
    with connect(limited_url) as sock:
        head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
        response, sent = trickle(sock, head, every=0.2, within=1.0 + SLACK_S)
    status, body = problem_of(response)
    assert status == 408 and body["code"] == "request_timeout" and sent < len(head)
    assert "server.header_timeout_s" in body["detail"]


def test_a_trickled_body_gets_408_and_a_slow_steady_one_is_served(limited_url):
    question = json.dumps({"question": "How long must passphrases be?"}).encode()
    with connect(limited_url) as sock:
        sock.sendall(
            b"POST /v1/query HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(question)
        )
        response, sent = trickle(sock, question, every=0.3, within=1.0 + SLACK_S)
    status, body = problem_of(response)
    assert status == 408 and body["code"] == "request_timeout" and sent < len(question)
    assert "server.body_timeout_s" in body["detail"] and "server.body_min_bytes_per_s" in body["detail"]

    # 6,000 bytes over about 2.5 s, past body_timeout_s but above body_min_bytes_per_s: served.
    padded = question[:-1] + b" " * (6000 - len(question)) + b"}"

    def steady() -> Iterator[bytes]:
        for i in range(0, len(padded), 1000):
            yield padded[i : i + 1000]
            time.sleep(0.4)

    answer = httpx.post(
        limited_url + "/v1/query", content=steady(), headers={"Content-Type": "application/json"}, timeout=30
    )
    assert answer.status_code == 200, answer.text


def test_connections_per_client_are_capped(limited_url):
    held = [connect(limited_url) for _ in range(3)]  # accepted in order: the server counts these first
    try:
        with connect(limited_url) as extra:
            status, body = problem_of(read_until_closed(extra, SLACK_S))
        assert status == 429 and body["code"] == "too_many_connections"
        assert "server.max_connections_per_client" in body["detail"]
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + SLACK_S  # closed connections no longer count
    while True:
        try:
            if httpx.get(limited_url + "/healthz", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the closed connections still count against the cap"
        time.sleep(0.05)
