"""Multi-turn: follow-ups become standalone queries before retrieval, and the rewrite is visible."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from rag.generation import Generation, GenerationParams
from rag.rewrite import needs_context, rewrite_heuristic, rewrite_llm, standalone_query
from serving.app import create_app
from tests.serving.server import running

HISTORY = [
    {"role": "user", "content": "How long must passphrases be for normal accounts?"},
    {"role": "assistant", "content": "At least 14 characters [1]."},
]


def test_the_heuristic_adds_the_earlier_questions_key_words_only_when_needed():
    assert needs_context("And for admin accounts?") and needs_context("What about it?")
    assert not needs_context("Which tool stores work passwords securely?")
    assert rewrite_heuristic("And for admin accounts?", HISTORY) == (
        "And for admin accounts? (long passphrases normal)"
    )
    standalone = "Which tool stores work passwords securely?"
    assert rewrite_heuristic(standalone, HISTORY) == standalone  # already standalone: untouched
    assert rewrite_heuristic("And for admins?", []) == "And for admins?"  # no history: nothing to add
    assert standalone_query("off", "And for admin accounts?", HISTORY) == "And for admin accounts?"


class Rewriter:
    model_id, model_sha256 = "rewriter", None

    def __init__(self, reply: str) -> None:
        self.reply, self.seen = reply, []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def stream(self, messages, params: GenerationParams, cancel: threading.Event | None = None):  # noqa: ANN001, ANN201
        self.seen.append(messages)
        return Generation(pieces=iter([self.reply]))


def test_the_llm_rewrite_and_its_fallback():
    engine = Rewriter("How long must passphrases be for admin accounts?\nextra line")
    assert rewrite_llm(engine, "And for admin accounts?", HISTORY) == "How long must passphrases be for admin accounts?"
    assert "Last question: And for admin accounts?" in engine.seen[0][-1]["content"]
    assert "User: How long must passphrases be" in engine.seen[0][-1]["content"]
    silent = Rewriter("")
    assert rewrite_llm(silent, "And for admin accounts?", HISTORY) == rewrite_heuristic(
        "And for admin accounts?", HISTORY
    )


def test_query_endpoint_and_chat_completions_show_the_rewrite(fake_container, tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "it.md").write_text(
        "# IT security\n\nPassphrases must be at least 14 characters long. Admin accounts need long "
        "passphrases of at least 20 characters.\n"
    )
    (docs / "canteen.md").write_text("# Canteen\n\nAccounts for the canteen card are topped up at reception.\n")
    fake_container.ingest_service().ingest_paths([docs], acl=["public"])
    with running(create_app(container=fake_container)) as url:
        body = {"question": "And for admin accounts?", "history": HISTORY}
        answer = httpx.post(url + "/v1/query", json=body, timeout=30).json()
        assert answer["question"] == "And for admin accounts?"
        assert answer["retrieval_query"] == "And for admin accounts? (long passphrases normal)"
        assert answer["chunks"][0]["metadata"]["source"].endswith("it.md")
        alone = httpx.post(url + "/v1/query", json={"question": "And for admin accounts?"}, timeout=30).json()
        assert alone["retrieval_query"] == "And for admin accounts?"
        messages = [*HISTORY, {"role": "user", "content": "And for admin accounts?"}]
        chat = httpx.post(url + "/v1/chat/completions", json={"messages": messages}, timeout=30).json()
        assert chat["retrieval_query"] == "And for admin accounts? (long passphrases normal)"
        bad = httpx.post(url + "/v1/query", json={**body, "history": [{"role": "system", "content": "x"}]})
        assert bad.status_code == 400 and "history.0.role" in bad.json()["detail"]
