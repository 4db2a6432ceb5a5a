"""`rag serve` as operators run it, in its own process: an API key from `rag keys create`, JSON log lines with the
request id, and a graceful stop: on SIGTERM an open stream finishes, then the process exits cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from eval.load_test import wait_ready
from tests.serving.server import free_port

pytestmark = [pytest.mark.integration]


def rag(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serving.cli", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_keys_json_logs_and_graceful_shutdown(real_container, tmp_path: Path):
    data_dir = tmp_path / "data"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "it.md").write_text("# IT security\n\nPassphrases must be at least 14 characters long.\n")
    assert rag(data_dir, "ingest", "--group", "it", str(docs)).returncode == 0
    created = rag(data_dir, "keys", "create", "--user", "ann", "--group", "it", "--name", "ann-laptop")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("rag-") and key not in (data_dir / "api_keys.yaml").read_text()  # stored hashed
    assert "ann-laptop\tuser=ann\tgroups=it\trole=employee" in rag(data_dir, "keys", "list").stdout

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "serving.cli", "--data-dir", str(data_dir), "serve", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            # a generated answer (the default quotes at once): still streaming when the stop comes
            env={
                **os.environ,
                "RAG_SERVER__SHUTDOWN_TIMEOUT_S": "60",
                "RAG_PROMPT__ANSWER": "generate",
                "RAG_SERVER__HEADER_TIMEOUT_S": "1",
            },
        )
    try:
        assert wait_ready(url, server, 180), log_path.read_text()[-3000:]
        assert httpx.post(url + "/v1/query", json={"question": "passphrase length?"}).status_code == 401
        # The connection limits are on: a request head that never ends gets 408 once server.header_timeout_s is up.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
            assert slow.recv(100).startswith(b"HTTP/1.1 408 ")

        client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)
        stream = client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "How long must passphrases be?"}],
            stream=True,
            max_tokens=120,
            extra_headers={"X-Request-ID": "graceful-stop-1"},
        )
        chunks = iter(stream)
        first = next(chunks)
        server.send_signal(signal.SIGTERM)  # stop while the answer is still streaming
        rest = list(chunks)
        final = [c for c in rest if c.choices and c.choices[0].finish_reason == "stop"]
        assert final, "the open stream was cut instead of drained"
        assert final[0].model_extra["citations"] and final[0].usage.completion_tokens > 0
        assert first.id == final[0].id
        # uvicorn re-raises the signal it caught once its shutdown is done: the exit is "killed by SIGTERM".
        assert server.wait(60) in (0, -signal.SIGTERM)
    finally:
        if server.poll() is None:
            server.kill()

    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    access = [e for e in lines if e.get("route") == "/v1/chat/completions"]
    assert access and access[-1]["request_id"] == "graceful-stop-1" and access[-1]["status"] == 200
    assert access[-1]["key"] == "ann-laptop" and access[-1]["level"] == "INFO"
    assert any(e.get("status") == 401 for e in lines)
    messages = [e["message"] for e in lines]
    # The app's shutdown ran after the stream was drained: batch thread stopped, store let go.
    assert "Application shutdown complete." in messages
    assert messages.index("Application shutdown complete.") > lines.index(access[-1])
    audit = [json.loads(line) for line in (data_dir / "audit" / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["request_id"] == "graceful-stop-1" and audit[-1]["user"] == "ann"


def test_a_second_server_on_a_held_store_exits_naming_the_holder(tmp_path: Path):
    """Embedded Chroma allows one process per store. This process holds it, as a running `rag serve` would: a
    second `rag serve` must exit at once with the holder's pid (as `rag ingest` does), not stay up unready."""
    from rag.locking import hold_store, release_store

    data_dir = tmp_path / "data"
    hold_store(data_dir / "chroma", "rag serve (the first)")
    try:
        second = subprocess.run(
            [sys.executable, "-m", "serving.cli", "--data-dir", str(data_dir), "serve", "--port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=120,  # before: it never exited
        )
    finally:
        release_store(data_dir / "chroma")
    said = " ".join((second.stdout + second.stderr).split())
    assert second.returncode == 2, said
    assert "is open in another process" in said and f"pid {os.getpid()}" in said
