"""HTTP contract over fakes: shapes, errors, readiness. A real uvicorn server, the official openai client."""

import json
import time
from pathlib import Path

import httpx
import openai
import pytest

from rag.container import Container
from rag.errors import ConfigError
from rag.settings import ApiKey
from rag.store import ChromaStore
from serving.app import create_app
from tests.fakes import TEST_KEYS, EchoEngine, HashEmbedder, auth
from tests.serving.server import running


@pytest.fixture
def base_url(fake_container, tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "it.md").write_text("# IT security\n\nPassphrases must be at least 14 characters long.\n")
    fake_container.ingest_service().ingest_paths([docs], acl=["public"])
    with running(create_app(container=fake_container)) as url:
        yield url


def test_openai_client_non_stream_and_stream(base_url):
    client = openai.OpenAI(base_url=base_url + "/v1", api_key=TEST_KEYS["alice"][0], max_retries=0)
    question = [{"role": "user", "content": "How long must passphrases be?"}]
    response = client.chat.completions.create(model="echo", messages=question)
    assert "14 characters" in response.choices[0].message.content
    assert response.model_extra["citations"][0]["title"] == "IT security"
    chunks = list(client.chat.completions.create(model="echo", messages=question, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == response.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_extra["citations"] == response.model_extra["citations"]


def test_errors_are_problem_json_with_the_openai_error_member(base_url):
    client = openai.OpenAI(base_url=base_url + "/v1", api_key=TEST_KEYS["alice"][0], max_retries=0)
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="echo", messages=[])
    assert raised.value.status_code == 400
    response = httpx.post(base_url + "/v1/query", json={"question": ""})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"].endswith("/invalid_request") and body["status"] == 400 and "question" in body["detail"]
    assert "Traceback" not in response.text
    assert httpx.get(base_url + "/nope").json()["code"] == "not_found"


def test_native_query_retrieve_models_health(base_url):
    query = httpx.post(base_url + "/v1/query", json={"question": "How long must passphrases be?"}).json()
    assert query["found"] and query["citations"] and query["chunks"]
    assert set(query["timings"]) >= {"retrieval_ms", "generation_ms", "total_ms"} and query["model"] == "echo"
    retrieved = httpx.post(base_url + "/v1/retrieve", json={"query": "passphrase length", "top_k": 1}).json()
    assert len(retrieved["chunks"]) == 1 and "14 characters" in retrieved["chunks"][0]["text"]
    assert httpx.get(base_url + "/v1/models").json()["data"][0]["id"] == "echo"
    assert httpx.get(base_url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(base_url + "/readyz").json()["status"] == "ready"


class SlowEngine(EchoEngine):
    def load(self) -> None:
        raise RuntimeError("weights missing")


def test_not_ready_gives_503_with_retry_after(fake_settings):
    container = Container(
        fake_settings, HashEmbedder(), SlowEngine(), ChromaStore(fake_settings.data_dir / "c", "test")
    )
    with running(create_app(container=container)) as url:
        assert httpx.get(url + "/healthz").status_code == 200
        for _ in range(100):  # loading runs in the background; wait for it to fail
            ready = httpx.get(url + "/readyz")
            if ready.json()["code"] == "model_load_failed":
                break
            assert ready.status_code == 503 and ready.headers["retry-after"]
            time.sleep(0.05)
        assert ready.status_code == 503 and ready.json()["code"] == "model_load_failed"
        client = openai.OpenAI(base_url=url + "/v1", api_key=TEST_KEYS["alice"][0], max_retries=0)
        with pytest.raises(openai.InternalServerError) as raised:
            client.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
        assert raised.value.status_code == 503
        assert "weights missing" in raised.value.response.json()["detail"]


def test_a_chunked_body_over_the_limit_gets_413(fake_container):
    fake_container.settings.server.max_body_kb = 1

    def pieces():  # no Content-Length: httpx sends it chunked, so only counting can catch it
        yield b'{"question": "'
        yield b"x" * 2048
        yield b'"}'

    with running(create_app(container=fake_container)) as url:
        response = httpx.post(url + "/v1/query", content=pieces(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "body_too_large" and "server.max_body_kb" in response.json()["detail"]


def test_a_broken_keys_file_keeps_the_last_good_keys_and_is_never_shown(fake_container, caplog):
    from serving.auth import hash_key, keys_file, write_keys_file

    fake_container.settings.server.allow_anonymous = False
    path = keys_file(fake_container.settings)
    carol = ApiKey(name="carol", sha256=hash_key("rag-carol-key"), user="carol", groups=["hr"], role="employee")
    write_keys_file(path, [carol])
    secret = "TOPSECRET-7f3a"
    with running(create_app(container=fake_container)) as url, caplog.at_level("ERROR"):
        as_carol = {"Authorization": "Bearer rag-carol-key"}
        assert httpx.post(url + "/v1/retrieve", json={"query": "x"}, headers=as_carol).status_code == 200
        # A hand edit gone wrong: bad YAML, with a line that must never reach a caller or the log.
        path.write_text(path.read_text() + f"  - name: dave {secret}: [\n")
        time.sleep(1.1)  # the file is looked at once a second at most
        for headers, status in [(as_carol, 200), ({"Authorization": "Bearer rag-wrong"}, 401), ({}, 401)]:
            response = httpx.post(url + "/v1/retrieve", json={"query": "x"}, headers=headers)
            assert response.status_code == status, response.text
            assert secret not in response.text and carol.sha256 not in response.text
        errors = [r.getMessage() for r in caplog.records if r.name == "serving.auth"]
        assert len(errors) == 1 and str(path) in errors[0] and "at line 8, column 3" in errors[0], errors
        assert secret not in errors[0] and carol.sha256 not in errors[0]

        dave = ApiKey(name="dave", sha256=hash_key("rag-dave-key"), user="dave", groups=[], role="employee")
        write_keys_file(path, [dave])  # fixed: the new keys apply, carol's is gone
        time.sleep(1.1)
        assert httpx.post(url + "/v1/retrieve", json={"query": "x"}, headers=as_carol).status_code == 401
        as_dave = {"Authorization": "Bearer rag-dave-key"}
        assert httpx.post(url + "/v1/retrieve", json={"query": "x"}, headers=as_dave).status_code == 200


def test_document_fetches_are_audited_refused_ones_too(fake_container, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pay.md").write_text("# Pay\n\nSalaries are paid on the 25th.\n")
    service = fake_container.ingest_service()
    report = service.ingest_paths([docs], acl=["group:hr"])
    doc_id = report.files[0].doc_id
    with running(create_app(container=fake_container)) as url:
        assert httpx.get(f"{url}/v1/documents/{doc_id}", headers=auth("alice")).status_code == 200
        for path in [f"/v1/documents/{doc_id}", f"/v1/documents/{doc_id}/file", "/v1/documents/nope"]:
            assert httpx.get(url + path, headers=auth("bob")).status_code == 404, path  # not his to see, or gone
    audit = fake_container.settings.data_dir / "audit" / "audit.jsonl"
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    seen = [(e["key"], e["route"], e["outcome"], e.get("requested")) for e in lines]
    assert seen == [
        ("alice", "/v1/documents/{doc_id}", "document shown", None),
        ("bob", "/v1/documents/{doc_id}", "document refused", doc_id),
        ("bob", "/v1/documents/{doc_id}/file", "file refused", doc_id),
        ("bob", "/v1/documents/{doc_id}", "document refused", "nope"),
    ]
    assert lines[1]["retrieved"] == [] and "may see" in lines[1]["reason"]


def test_keys_file_errors_say_where_but_never_quote_the_file(tmp_path):
    from serving.auth import read_keys_file

    path = tmp_path / "api_keys.yaml"
    pasted = "rag-" + "k" * 43  # the key itself pasted where its hash belongs: the likeliest mistake
    path.write_text(f"keys:\n  - name: ann\n    sha256: {pasted}\n    user: ann\n")
    with pytest.raises(ConfigError) as raised:
        read_keys_file(path)
    assert str(path) in raised.value.message and "key #1, sha256" in raised.value.message
    assert pasted not in raised.value.message


def test_unknown_or_unsupported_body_fields_are_refused_naming_the_field(base_url):
    question = [{"role": "user", "content": "How long must passphrases be?"}]
    client = openai.OpenAI(base_url=base_url + "/v1", api_key=TEST_KEYS["alice"][0], max_retries=0)
    # What the official client sends for fields that ask for nothing here is accepted.
    one = client.chat.completions.create(
        model="echo", messages=question, n=1, stream_options=None, metadata={"ticket": "42"}, presence_penalty=0
    )
    assert "14 characters" in one.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as three:  # three answers asked for: never one silently
        client.chat.completions.create(model="echo", messages=question, n=3)
    assert three.value.body["param"] == "n" and "one choice" in three.value.body["message"]
    cases = [
        ("/v1/chat/completions", {"messages": question, "filters": {"tags": ["hr"]}}, "filters"),
        ("/v1/chat/completions", {"messages": [{**question[0], "nmae": "ann"}]}, "messages.0.nmae"),
        ("/v1/query", {"question": "passphrases?", "top-k": 3}, "top-k"),
        ("/v1/query", {"question": "passphrases?", "filters": {"ingested_after": "yesterday"}}, "ingested_after"),
        ("/v1/retrieve", {"query": "passphrases", "filter": {"tags": ["hr"]}}, "filter"),
        ("/v1/retrieve", {"query": "passphrases", "filters": {"ingested_before": "2025-13-01"}}, "ingested_before"),
    ]
    for route, body, field in cases:
        response = httpx.post(base_url + route, json=body, headers={"Authorization": f"Bearer {TEST_KEYS['alice'][0]}"})
        assert response.status_code == 400, (route, body, response.text)
        assert response.json()["error"]["param"].endswith(field) and field in response.json()["detail"]
    dated = httpx.post(
        base_url + "/v1/retrieve", json={"query": "passphrases", "filters": {"ingested_after": "2000-01-01"}}
    )
    assert dated.status_code == 200 and dated.json()["chunks"]
    later = httpx.post(
        base_url + "/v1/retrieve", json={"query": "passphrases", "filters": {"ingested_after": "2999-01-01T00:00:00Z"}}
    )
    assert later.status_code == 200 and later.json()["chunks"] == []
