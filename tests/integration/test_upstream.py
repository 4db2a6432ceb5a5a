"""Generation delegated to an OpenAI-compatible server: a second instance of this project's own server (the real
SmolLM2 behind it, serving `<model>:no-rag`) on loopback. Retrieval, access control and citations stay in the
front server; text streams through. Failure policy: a dead engine and one that never answers are skipped for the
fallback; with every engine down, a 503."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import openai
import pytest

from rag.container import Container, build_engine
from rag.errors import UpstreamUnavailableError
from rag.settings import UpstreamSettings, load_settings
from rag.store import ChromaStore
from serving.app import create_app
from tests.fakes import TEST_KEYS, api_key_settings
from tests.serving.server import free_port, running

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def upstream_url(real_container):
    with running(create_app(container=real_container)) as url:
        yield url + "/v1"


@pytest.fixture
def silent_port():
    """A server that accepts connections and never answers: the read timeout has to fire."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def front(real_container, tmp_path: Path, upstreams: list[dict]) -> Container:
    settings = load_settings(
        data_dir=tmp_path / "data",
        llm={"mode": "openai", "upstream": upstreams[0], "fallbacks": upstreams[1:]},
        prompt={"answer": "generate"},  # the upstream writes the answers (the default quotes, generating nothing)
        server={"api_keys": api_key_settings()},
    )
    container = Container(
        settings, real_container.embedder, build_engine(settings), ChromaStore(tmp_path / "data" / "chroma", "front")
    )
    container.load()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "it.md").write_text("# IT security\n\nPassphrases must be at least 14 characters long.\n")
    container.ingest_service().ingest_paths([docs], acl=["public"])
    return container


def engine_entry(url: str, model: str, **extra) -> dict:
    return {"url": url, "model": model, "api_key_env": "RAG_TEST_UPSTREAM_KEY", **extra}


def ask(url: str, stream: bool):  # noqa: ANN201
    client = openai.OpenAI(base_url=url + "/v1", api_key=TEST_KEYS["alice"][0], max_retries=0, timeout=120)
    return client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "How long must passphrases be?"}], stream=stream, max_tokens=40
    )


def test_answers_stream_through_the_upstream_with_our_citations(real_container, upstream_url, tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_TEST_UPSTREAM_KEY", TEST_KEYS["bob"][0])
    model = real_container.engine.model_id + ":no-rag"
    container = front(real_container, tmp_path, [engine_entry(upstream_url, model)])
    assert container.engine.model_sha256 == real_container.engine.model_sha256  # the record crosses over
    assert container.engine.model_id == real_container.engine.model_id
    with running(create_app(container=container)) as url:
        chunks = list(ask(url, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        final = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"][0]
        # The draft is held back until the claims check, then sent: role, text, final chunk with the extras.
        assert text.strip() and len(chunks) >= 3 and final.model_extra["support"] is not None
        assert [c["source"].endswith("it.md") for c in final.model_extra["citations"]] == [True]
        assert final.usage.completion_tokens > 0
        answer = ask(url, stream=False)
        assert answer.choices[0].message.content and answer.model_extra["model_sha256"]
    container.store.close()


def test_dead_and_silent_engines_fall_back_and_all_down_is_a_503(
    real_container, upstream_url, tmp_path, monkeypatch, silent_port
):
    monkeypatch.setenv("RAG_TEST_UPSTREAM_KEY", TEST_KEYS["bob"][0])
    model = real_container.engine.model_id + ":no-rag"
    dead = engine_entry(f"http://127.0.0.1:{free_port()}/v1", model, retries=1)
    silent = engine_entry(f"http://127.0.0.1:{silent_port}/v1", model, retries=0, timeout_s=1.0)
    container = front(real_container, tmp_path, [dead, silent, engine_entry(upstream_url, model)])
    with running(create_app(container=container)) as url:
        started = time.monotonic()
        answer = ask(url, stream=False)
        assert answer.choices[0].message.content
        assert time.monotonic() - started < 60
        assert answer.model_extra["citations"]
    container.store.close()

    # Both engines go away after start-up: a 503 that says so, with Retry-After.
    container = front(real_container, tmp_path / "down", [engine_entry(upstream_url, model)])
    engine = container.engine
    engine.endpoints = [UpstreamSettings(**dead), UpstreamSettings(**silent)]
    engine._clients = [engine._client(e) for e in engine.endpoints]
    with running(create_app(container=container)) as url:
        with pytest.raises(openai.InternalServerError) as down:
            ask(url, stream=False)
        assert down.value.status_code == 503 and down.value.body["code"] == "upstream_unavailable"
        assert str(silent_port) in down.value.message and down.value.response.headers["retry-after"]
    container.store.close()
    # And at start-up, with no engine answering, loading fails with the reasons.
    settings = load_settings(data_dir=tmp_path / "x", llm={"mode": "openai", "upstream": dead})
    with pytest.raises(UpstreamUnavailableError, match="no generation engine answers"):
        build_engine(settings).load()
