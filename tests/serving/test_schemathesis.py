"""Property-based requests generated from the app's own OpenAPI schema (schemathesis), against a real uvicorn
server on loopback: whatever a client sends, valid or not, no request yields a 5xx. Bounded: a fixed number of
examples per operation, derandomised, so CI time and results are stable."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from ingest.pipeline import IngestService
from rag.container import Container
from rag.settings import load_settings
from rag.store import ChromaStore
from serving.app import create_app
from tests.fakes import EchoEngine, HashEmbedder, api_key_settings, auth
from tests.serving.server import running

EXAMPLES_PER_OPERATION = 15


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
    IngestService(container.embedder, container.store, app_settings.chunking).ingest_paths([docs], acl=["public"])
    with running(create_app(container=container)) as url:
        yield url
    container.store.close()


def test_no_generated_request_yields_a_server_error(api_url: str):
    schema = schemathesis.openapi.from_url(api_url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10  # the OpenAI, native, health and admin routes
    calls: dict[str, int] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case) -> None:  # noqa: ANN001
            case.headers = {**(case.headers or {}), **auth("admin")}  # an admin key reaches every route
            response = case.call(timeout=30)
            label = f"{case.method} {case.path}"
            calls[label] = calls.get(label, 0) + 1
            assert response.status_code < 500, f"{label}: {response.status_code} {response.text[:300]}"
            if response.status_code >= 400:
                content_type = response.headers.get("content-type") or [""]  # schemathesis: header -> values
                assert content_type[0] == "application/problem+json", response.text[:300]
                assert "Traceback" not in response.text

        check()
    assert len(calls) == len(operations) and sum(calls.values()) >= 3 * len(operations)
