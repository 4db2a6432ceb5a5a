"""The chat endpoint under its limits, on the real path: real SmolLM2 through the batching engine, real uvicorn,
the official openai client. Auth (401/403), body and prompt limits (413/400), a full generation queue (503 with
Retry-After), a client that disconnects (its place is free again within a second), metrics and the audit log."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from rag.container import Container, build_engine
from rag.settings import load_settings
from rag.store import ChromaStore
from serving.app import create_app
from tests.fakes import TEST_KEYS, api_key_settings, auth
from tests.serving.server import running

pytestmark = [pytest.mark.integration]

ALICE = TEST_KEYS["alice"][0]


@pytest.fixture(scope="module")
def server(real_container, tmp_path_factory):
    """One slot and one queue place, so that the limits are reached with three requests."""
    tmp = tmp_path_factory.mktemp("limits")
    data_dir = tmp / "data"
    settings = load_settings(
        data_dir=data_dir,
        llm={"max_batch": 1, "max_queue": 1},
        prompt={"answer": "generate"},  # answers take the model's slot (the default quotes without generating)
        server={
            "api_keys": api_key_settings(),
            "admin_api": True,
            "max_body_kb": 16,
            "max_prompt_tokens": 200,
            "rate_limit": "1000/minute",
        },
    )
    engine = build_engine(settings)  # its own engine: the real model, with this batch size
    container = Container(settings, real_container.embedder, engine, ChromaStore(data_dir / "chroma", "limits"))
    container.load()
    docs = tmp / "docs"
    docs.mkdir()
    (docs / "it.md").write_text("# IT security\n\nPassphrases must be at least 14 characters long.\n")
    container.ingest_service().ingest_paths([docs], acl=["public"])
    with running(create_app(container=container)) as url:
        yield url, container
    engine.close()
    container.store.close()


def client(url: str, key: str = ALICE) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)


def metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


ASK = [{"role": "user", "content": "How long must passphrases be?"}]
# A request that holds its slot for many seconds: the model alone (no retrieval), asked for a long text. An answer
# from the documents is about 20 tokens, short enough to end before a test can look at the batch.
LONG = {"model": "m:no-rag", "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}]}


def wait_until(condition, what: str, seconds: float = 30.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_auth_401_for_no_or_bad_key_403_for_employees_on_admin_routes(server):
    url, _ = server
    with pytest.raises(openai.AuthenticationError) as bad:
        client(url, key="rag-not-a-key").chat.completions.create(model="m", messages=ASK)
    assert bad.value.status_code == 401 and "not valid" in bad.value.message
    assert bad.value.response.headers["content-type"] == "application/problem+json"
    assert bad.value.response.headers["www-authenticate"].startswith("Bearer")
    assert bad.value.body["code"] == "invalid_api_key"  # the OpenAI error member the SDK parses
    assert bad.value.response.json()["type"].endswith("/invalid_api_key")  # RFC 9457 beside it
    # The SDK always sends a key; a caller without one (curl, a browser) gets the same 401, saying what to do.
    missing = httpx.post(url + "/v1/chat/completions", json={"model": "m", "messages": ASK})
    assert missing.status_code == 401 and "rag keys create" in missing.json()["detail"]
    with pytest.raises(openai.PermissionDeniedError) as employee:  # an employee key on an admin route
        client(url).get("/admin/documents", cast_to=object)
    assert employee.value.status_code == 403 and employee.value.body["code"] == "admin_only"
    assert httpx.get(url + "/v1/admin/documents", headers=auth("admin")).status_code == 200
    assert [m.id for m in client(url).models.list().data][0]  # a valid employee key works


def test_body_prompt_and_max_tokens_limits_name_the_limit(server):
    url, _ = server
    huge = [{"role": "user", "content": "word " * 5000}]  # about 25 KB of JSON
    with pytest.raises(openai.APIStatusError) as too_big:
        client(url).chat.completions.create(model="m", messages=huge)
    assert too_big.value.status_code == 413 and "server.max_body_kb" in too_big.value.message
    long = [{"role": "user", "content": "passphrase " * 400}]  # under 16 KB, over 200 tokens
    with pytest.raises(openai.BadRequestError) as too_long:
        client(url).chat.completions.create(model="m", messages=long)
    assert too_long.value.body["code"] == "prompt_too_long" and "server.max_prompt_tokens" in too_long.value.message
    with pytest.raises(openai.BadRequestError) as too_many:
        client(url).chat.completions.create(model="m", messages=ASK, max_tokens=100_000)
    assert too_many.value.body["code"] == "max_tokens_too_large" and "llm.max_new_tokens" in too_many.value.message
    assert too_many.value.body["param"] == "max_tokens"


def test_full_queue_is_a_fast_503_and_a_disconnect_frees_the_slot(server):
    url, container = server
    first = client(url).chat.completions.create(**LONG, stream=True, max_tokens=160)
    next(iter(first))
    wait_until(lambda: container.engine.load_info()["active"] == 1, "the first request never took the slot")
    queued: dict = {}

    def wait_in_queue() -> None:
        queued["answer"] = client(url).chat.completions.create(model="m", messages=ASK, max_tokens=8)

    waiter = threading.Thread(target=wait_in_queue)
    waiter.start()
    wait_until(lambda: container.engine.load_info()["queued"] == 1, "the second request never reached the queue")
    assert metric(url, "rag_generation_queue_depth") == 1 and metric(url, "rag_generation_active") == 1

    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as busy:
        client(url).chat.completions.create(model="m", messages=ASK, max_tokens=8)
    assert time.monotonic() - started < 2.0  # refused at once, not after a wait
    assert busy.value.status_code == 503 and busy.value.body["code"] == "server_busy"
    assert int(busy.value.response.headers["retry-after"]) >= 1

    first.close()  # the client goes away mid-stream
    gone = time.monotonic()
    while container.engine.load_info()["queued"]:  # the queued request takes the freed place
        assert time.monotonic() - gone < 1.0, "the disconnected stream still holds its place after 1 s"
        time.sleep(0.02)
    waiter.join(60)
    assert queued["answer"].choices[0].message.content
    wait_until(lambda: not container.engine.load_info()["active"], "the queued request never finished")
    # With nothing queued, a disconnect empties the batch within a second.
    stream = client(url).chat.completions.create(**LONG, stream=True, max_tokens=160)
    next(iter(stream))
    wait_until(lambda: container.engine.load_info()["active"] == 1, "the stream never took the slot")
    stream.close()
    gone = time.monotonic()
    while container.engine.load_info()["active"]:
        assert time.monotonic() - gone < 1.0, "the slot was not freed within 1 s of the disconnect"
        time.sleep(0.02)


def test_metrics_and_the_audit_log_record_who_asked_and_what_was_shown(server):
    url, container = server
    ready = httpx.get(url + "/readyz").json()
    assert ready["status"] == "ready" and ready["chunks"] >= 1 and ready["generation"]["slots"] == 1
    answer = client(url).chat.completions.create(model="m", messages=ASK, max_tokens=40)
    cited = {c["document_id"] for c in answer.model_extra["citations"]}
    text = httpx.get(url + "/metrics").text
    for name in (
        'rag_http_requests_total{method="POST",route="/v1/chat/completions",status="200"}',
        "rag_http_request_duration_seconds_bucket",
        "rag_time_to_first_token_seconds_count",
        "rag_generation_tokens_per_second_count",
        "rag_retrieval_duration_seconds_count",
        "rag_generation_queue_depth",
        "rag_ingest_jobs",
        "rag_ready 1.0",
    ):
        assert name in text, name
    lines = (container.settings.data_dir / "audit" / "audit.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    mine = [e for e in entries if e["route"] == "/v1/chat/completions" and e["outcome"] == "answered"][-1]
    assert mine["user"] == "alice" and mine["groups"] == ["hr"] and mine["key"] == "alice"
    assert mine["question"] == ASK[0]["content"] and set(mine["cited"]) == cited and mine["retrieved"]
    assert any(e["outcome"] == "client disconnected" for e in entries)
    assert len(mine["request_id"]) >= 16


def test_rate_limit_is_a_429_with_retry_after(real_container, tmp_path: Path):
    settings = load_settings(
        data_dir=tmp_path / "data", server={"api_keys": api_key_settings(), "rate_limit": "2/minute"}
    )
    container = Container(
        settings, real_container.embedder, real_container.engine, ChromaStore(tmp_path / "c", "ratelimit")
    )
    container.load()
    with running(create_app(container=container)) as url:
        for _ in range(2):
            client(url).models.list()
        with pytest.raises(openai.RateLimitError) as limited:
            client(url).models.list()
        assert limited.value.status_code == 429 and limited.value.body["code"] == "rate_limited"
        assert 1 <= int(limited.value.response.headers["retry-after"]) <= 60
        assert "server.rate_limit" in limited.value.message
        # Another key has its own budget.
        other = openai.OpenAI(base_url=url + "/v1", api_key=TEST_KEYS["bob"][0], max_retries=0)
        assert other.models.list().data
    container.store.close()
