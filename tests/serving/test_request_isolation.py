"""One caller's bad request or failed generation harms no one else, and says what went wrong: a seed outside 64
bits and a lone surrogate are 400s naming the field; a stream whose generation fails mid-way ends with an error
event and [DONE], and the access log, metrics and audit log count it as failed. Real uvicorn, the openai client."""

from __future__ import annotations

import json
import logging
import threading

import httpx
import openai
import pytest

from rag import errors
from rag.container import Container
from rag.generation import Generation, GenerationParams, Message
from rag.settings import load_settings
from rag.store import ChromaStore
from serving.app import create_app
from tests.fakes import TEST_KEYS, EchoEngine, HashEmbedder, api_key_settings
from tests.serving.server import running

CHAT = "/v1/chat/completions"
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1  # a signed 64-bit integer, as in OpenAI's API
ASK = [{"role": "user", "content": "How long must passphrases be?"}]


class BreaksMidway(EchoEngine):
    """Echoes, except that a prompt with the word "break" fails after two pieces, as a generation fault does."""

    def stream(
        self, messages: list[Message], params: GenerationParams, cancel: threading.Event | None = None
    ) -> Generation:
        generation = super().stream(messages, params, cancel)
        if "break" not in messages[-1]["content"]:
            return generation
        words = generation.pieces

        def pieces():  # noqa: ANN202
            for i, piece in enumerate(words):
                if i == 2:
                    raise errors.GenerationFailedError("the model failed while writing this answer: retry")
                yield piece

        generation.pieces = pieces()
        return generation


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module: each test's requests are independent of the others'."""
    tmp = tmp_path_factory.mktemp("isolation")
    settings = load_settings(
        data_dir=tmp / "data",
        chunking={"chunk_tokens": 60, "overlap_tokens": 8},
        server={"allow_anonymous": True, "api_keys": api_key_settings(), "rate_limit": "100000/minute"},
    )
    container = Container(settings, HashEmbedder(), BreaksMidway(), ChromaStore(tmp / "data" / "chroma", "isolation"))
    container.load()
    docs = tmp / "docs"
    docs.mkdir()
    (docs / "it.md").write_text("# IT security\n\nPassphrases must be at least 14 characters long.\n")
    container.ingest_service().ingest_paths([docs])
    with running(create_app(container=container)) as url:
        yield url, container
    container.store.close()


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=TEST_KEYS["alice"][0], max_retries=0, timeout=30)


def post(url: str, path: str, raw: str) -> httpx.Response:
    """Send a JSON body as written: httpx's own encoder cannot encode a lone surrogate, a client's can."""
    return httpx.post(url + path, content=raw.encode(), headers={"Content-Type": "application/json"}, timeout=30)


def test_a_seed_outside_64_bits_is_a_400_that_names_the_field_and_the_range(server):
    url, _ = server
    with pytest.raises(openai.BadRequestError) as refused:  # the request
        client(url).chat.completions.create(model="m", messages=ASK, temperature=0.7, seed=2**64)
    body = refused.value.response.json()
    assert refused.value.response.headers["content-type"] == "application/problem+json"
    assert body["error"]["param"] == "seed" and f"from {SEED_MIN} to {SEED_MAX}" in body["detail"]
    query = httpx.post(url + "/v1/query", json={"question": "How long must passphrases be?", "seed": -(2**63) - 1})
    assert query.status_code == 400 and query.json()["error"]["param"] == "seed"
    assert str(SEED_MAX) in query.json()["detail"]
    for seed in (SEED_MIN, SEED_MAX):  # the bounds themselves are fine
        assert client(url).chat.completions.create(model="m", messages=ASK, temperature=0.7, seed=seed).choices
        assert httpx.post(url + "/v1/query", json={"question": "passphrase length?", "seed": seed}).status_code == 200


@pytest.mark.parametrize(
    ("path", "raw", "param"),
    [
        (CHAT, '{"messages": [{"role": "user", "content": "\\ud800 passphrases"}]}', "messages.0.content"),
        (CHAT, '{"stream": true, "messages": [{"role": "user", "content": "a\\udfffb"}]}', "messages.0.content"),
        (CHAT, '{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\ud800"}]}]}', None),
        (CHAT, '{"rag": false, "messages": [{"role": "user", "content": "x"}], "stop": ["\\udbff"]}', "stop.0"),
        ("/v1/query", '{"question": "passphrases \\ud800"}', "question"),
        ("/v1/query", '{"question": "x", "filters": {"title": "\\ud800"}}', "filters.title"),
    ],
)
def test_a_lone_surrogate_is_a_400_that_names_the_field(server, path, raw, param):
    url, _ = server
    response = post(url, path, raw)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "invalid_request" and "surrogate" in body["detail"]
    assert body["error"]["param"] == (param or "messages.0.content.0.text")


def test_a_surrogate_pair_is_an_ordinary_character(server):
    url, _ = server
    response = post(url, CHAT, '{"messages": [{"role": "user", "content": "passphrases \\ud83d\\ude00?"}]}')
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]


def sse_events(response: httpx.Response) -> list[str]:
    return [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]


def failed_chats(url: str) -> float:
    needle = f'rag_http_requests_total{{method="POST",route="{CHAT}",status="500"}} '
    line = next((line for line in httpx.get(url + "/metrics").text.splitlines() if line.startswith(needle)), None)
    return float(line.split()[-1]) if line else 0.0


def test_a_stream_that_fails_midway_ends_with_an_error_event_then_done_and_counts_as_failed(server, caplog):
    url, container = server
    caplog.set_level(logging.INFO, logger="serving.observability")
    failed_before = failed_chats(url)
    breaking = {"model": "m", "rag": False, "stream": True, "messages": [{"role": "user", "content": "break it now"}]}
    with httpx.stream("POST", url + CHAT, json=breaking, timeout=30) as response:
        assert response.status_code == 200  # sent before the model failed
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])
    assert error["code"] == "generation_failed" and error["status"] == 500
    assert error["error"]["message"].startswith("the model failed") and "Traceback" not in events[-2]
    written = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-2])
    assert written == "break it"  # what was written before the fault reached the client

    # The official client raises the error event as an APIError, with the server's message.
    stream = client(url).chat.completions.create(
        model="m:no-rag", messages=[{"role": "user", "content": "break it now"}], stream=True
    )
    with pytest.raises(openai.APIError, match="the model failed"):
        for _ in stream:
            pass

    # Not a success in the access log, the metrics or the audit log; another caller is served as ever.
    assert failed_chats(url) == failed_before + 2
    lines = [r.getMessage() for r in caplog.records if r.name == "serving.observability" and CHAT in r.getMessage()]
    assert any(" 500 " in line and "stream failed after its 200: generation_failed" in line for line in lines)
    audit = (container.settings.data_dir / "audit" / "audit.jsonl").read_text().splitlines()
    assert json.loads(audit[-1])["outcome"] == "failed: generation_failed"
    chunks = list(client(url).chat.completions.create(model="m", messages=ASK, stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_generation_that_fails_before_the_response_is_a_500_that_says_so(server):
    url, _ = server
    response = httpx.post(url + CHAT, json={"rag": False, "messages": [{"role": "user", "content": "break it now"}]})
    assert response.status_code == 500 and response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "generation_failed" and "retry" in response.json()["detail"]
