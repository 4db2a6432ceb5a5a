"""Property-based requests generated from the app's own OpenAPI schema (schemathesis), against a real uvicorn
server on loopback: whatever a client sends, valid or not, no request yields a 5xx. Bounded: a fixed number of
examples per operation, derandomised, so CI time and results are stable.

Some cases get one hostile value that generation alone would not try: a lone surrogate in a string (hypothesis
never draws one), an integer past 64 bits, or a ``seed`` at or past the 64-bit bounds (both once gave 500s)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag.container import Container
from rag.settings import load_settings
from rag.store import ChromaStore
from serving.app import create_app
from tests.fakes import EchoEngine, HashEmbedder, api_key_settings, auth
from tests.serving.server import running

EXAMPLES_PER_OPERATION = 15
HOSTILE = st.one_of(
    st.none(),  # the case as generated
    st.tuples(st.just("string"), st.sampled_from(["\ud800", "\udfff", "\ud83d\ude00"])),  # the last: a valid pair
    st.tuples(st.just("integer"), st.sampled_from([2**64, -(2**63) - 1, 10**30])),
    st.tuples(st.just("seed"), st.sampled_from([2**64, -(2**63) - 1, 2**63 - 1, -1])),
)


def spoiled(body: Any, hostile: tuple[str, Any], fields: set[str]) -> Iterator[None]:
    """Put the hostile value into ``body`` at one place after another within its declared ``fields`` (generated
    bodies carry many undeclared ones, which are ignored), in place, yielding each time and restoring the place
    after: each string prefixed with it, each integer replaced by it, or ``seed`` set to it. In place because
    schemathesis checks a body assigned anew against the schema, with a validator that cannot take a lone
    surrogate."""
    kind, value = hostile
    if kind == "seed":
        if isinstance(body, dict):
            body["seed"] = value
            yield
        return
    places = []  # (container, key) of every string or integer in a declared field, depth first
    stack = [body]
    while stack:
        item = stack.pop()
        for key, child in item.items() if isinstance(item, dict) else enumerate(item):
            if item is body and key not in fields:
                continue
            if isinstance(child, dict | list):
                stack.append(child)
            elif (kind == "string" and isinstance(child, str)) or (
                kind == "integer" and isinstance(child, int) and not isinstance(child, bool)
            ):
                places.append((item, key))
    for container, key in places[:12]:
        original = container[key]
        container[key] = value + original if kind == "string" else value
        yield
        container[key] = original


@pytest.fixture
def api_url(tmp_path: Path):
    app_settings = load_settings(
        data_dir=tmp_path / "data",
        chunking={"chunk_tokens": 60, "overlap_tokens": 8},
        ingest={"parse_workers": 1},
        server={"api_keys": api_key_settings(), "admin_api": True, "rate_limit": "100000/minute"},
    )
    container = Container(app_settings, HashEmbedder(), EchoEngine(), ChromaStore(tmp_path / "data" / "chroma", "api"))
    container.load()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "it.md").write_text("# IT security\n\nPassphrases must be at least 14 characters long.\n")
    container.ingest_service().ingest_paths([docs], acl=["public"])
    with running(create_app(container=container)) as url:
        yield url
    container.store.close()


def test_no_generated_request_yields_a_server_error(api_url: str):
    schema = schemathesis.openapi.from_url(api_url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10  # the OpenAI, native, health and admin routes
    calls: dict[str, int] = {}
    tried: dict[str, int] = {}
    document = httpx.get(api_url + "/openapi.json").json()

    def declared(method: str, path: str) -> set[str]:
        """The top-level fields a JSON request body declares."""
        body = document["paths"][path][method.lower()].get("requestBody", {})
        schema = body.get("content", {}).get("application/json", {}).get("schema", {})
        if "$ref" in schema:
            schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        return set(schema.get("properties", {}))

    def send(case) -> None:  # noqa: ANN001
        response = case.call(timeout=30)
        label = f"{case.method} {case.path}"
        calls[label] = calls.get(label, 0) + 1
        assert response.status_code < 500, f"{label}: {response.status_code} {response.text[:300]}"
        if response.status_code >= 400:
            content_type = response.headers.get("content-type") or [""]  # schemathesis: header -> values
            assert content_type[0] == "application/problem+json", response.text[:300]
            assert "Traceback" not in response.text

    for operation in operations:

        @given(case=operation.as_strategy(), hostile=HOSTILE)
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case, hostile: tuple[str, Any] | None) -> None:  # noqa: ANN001
            case.headers = {**(case.headers or {}), **auth("admin")}  # an admin key reaches every route
            sent = False
            if hostile is not None and isinstance(case.body, dict) and "json" in (case.media_type or ""):
                for _ in spoiled(case.body, hostile, declared(case.method, case.path)):  # not forms, not uploads
                    send(case)
                    sent = True
                    tried[hostile[0]] = tried.get(hostile[0], 0) + 1
            if not sent:
                send(case)

        check()
    assert len(calls) == len(operations) and sum(calls.values()) >= 3 * len(operations)
    assert set(tried) == {"string", "integer", "seed"}, tried
