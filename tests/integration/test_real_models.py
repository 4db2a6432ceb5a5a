"""The real path: real embedder, real SmolLM2 through transformers, real chromadb on disk, real uvicorn,
the official openai client."""

import json
import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from rag.answering import TextDelta
from rag.schemas import Answer
from serving.app import create_app
from tests.fakes import TEST_KEYS, api_key_settings
from tests.serving.server import running

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUESTION = "How long does my passphrase need to be for a normal, non-admin account?"
UNANSWERABLE = "What is the CEO's annual salary?"


@pytest.fixture
def generating(real_container):
    """The real container with SmolLM2 writing the answers (prompt.answer: generate) for one test."""
    real_container.settings.prompt.answer = "generate"
    yield real_container
    real_container.settings.prompt.answer = "quote"


# The README's quick-start questions and the answers the sample corpus gives: the runbook and the policy.
QUICK_START = {
    "How quickly must a SEV1 page be acknowledged?": "Acknowledge the page within 5 minutes.",
    "How long must a passphrase be?": "at least 14 characters long for standard user accounts",
    "What must happen within 15 minutes of a SEV1 being declared?": "Incident commander assigned within 15 minutes.",
}


@pytest.mark.parametrize("question", list(QUICK_START))
def test_quick_start_questions_get_the_documents_answer(real_container, question):
    final = real_container.answers.answer(question)
    assert final.found and QUICK_START[question] in final.answer
    assert final.support == "verified" and final.failed_claims == []
    citation = final.citations[0]
    assert QUICK_START[question] in citation.quote
    assert citation.text[citation.quote_start : citation.quote_end] == citation.quote


def test_answer_streams_and_cites_the_right_document(generating):
    real_container = generating
    events = list(real_container.answers.stream(QUESTION))
    final = events[-1]
    assert isinstance(final, Answer) and final.found
    assert "".join(e.text for e in events if isinstance(e, TextDelta)).strip() == final.answer
    assert len(final.answer.split()) >= 3
    assert final.citations and final.citations[0].source.endswith("it-security-policy.md")
    assert f"[{final.citations[0].index}]" in final.answer
    assert final.model == "SmolLM2-135M-Instruct.Q4_1" and len(final.model_sha256 or "") == 64
    assert final.usage.completion_tokens > 0 and final.tokens_per_second
    assert final.timings.retrieval_ms > 0 and final.timings.generation_ms > 0
    # SmolLM2's draft is shown only if its values are in the cited passage; otherwise the passage is quoted.
    assert final.support is not None and (final.repair == "quoted") == (final.support != "verified")
    from rag import verify

    assert not verify.check(final.answer, [c.text for c in final.citations]).failed


def test_unanswerable_question_is_declined(real_container):
    answer = real_container.answers.answer(UNANSWERABLE)
    assert not answer.found and answer.citations == []
    assert answer.answer == "I cannot find the answer in the documents."


def test_openai_client_reads_answer_and_citations(real_container):
    with running(create_app(container=real_container)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key=TEST_KEYS["alice"][0], max_retries=0)
        model = client.models.list().data[0]  # the RAG assistant; [1] is the same model without retrieval
        messages = [{"role": "user", "content": QUESTION}]
        response = client.chat.completions.create(model=model.id, messages=messages, max_tokens=60)
        content = response.choices[0].message.content
        citations = response.model_extra["citations"]
        assert content and citations and citations[0]["source"].endswith("it-security-policy.md")
        assert "14 characters" in content and response.model_extra["support"] == "verified"
        assert citations[0]["quote"] and citations[0]["quote"] in citations[0]["text"]
        stream = client.chat.completions.create(model=model.id, messages=messages, max_tokens=60, stream=True)
        chunks = list(stream)
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed.strip() == content  # greedy decoding: the same answer both ways
        assert chunks[-1].model_extra["citations"] == citations


def test_cli_ask_json_and_ingest_exit_status(real_container, real_data_dir, tmp_path: Path):
    env = {**os.environ, "RAG_DATA_DIR": str(real_data_dir)}
    chunks = real_container.store.count()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text("# Car park\n\nThe car park closes at 22:00 on weekdays.\n")
    (docs / "bad.pdf").write_bytes(b"%PDF-1.4 not a pdf")

    # This process has the store open, as `rag serve` would: a CLI ingest beside it is refused, nothing changes.
    beside = subprocess.run(
        [sys.executable, "-m", "serving.cli", "ingest", str(docs)], capture_output=True, text=True, env=env, timeout=300
    )
    assert beside.returncode == 2, beside.stdout + beside.stderr
    said = " ".join((beside.stdout + beside.stderr).split())
    assert "is open in another process" in said and f"pid {os.getpid()}" in said and "admin API" in said
    assert real_container.store.count() == chunks

    real_container.store.close()  # let go, so the CLI may open the store; the next use here reopens it
    ask = subprocess.run(
        [sys.executable, "-m", "serving.cli", "ask", "--json", QUESTION],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert ask.returncode == 0, ask.stderr
    answer = json.loads(ask.stdout)
    assert answer["found"] and answer["citations"][0]["source"].endswith("it-security-policy.md")
    assert {"retrieval_ms", "generation_ms"} <= set(answer["timings"])
    assert answer["support"] == "verified" and answer["failed_claims"] == [] and answer["citations"][0]["quote"]
    assert real_container.store.count() == chunks  # reopened here after the CLI let go

    ingest = subprocess.run(
        [sys.executable, "-m", "serving.cli", "--data-dir", str(tmp_path / "store"), "ingest", str(docs)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ingest.returncode == 1
    assert "bad.pdf" in ingest.stderr and "1 added" in ingest.stderr and "1 failed" in ingest.stderr


def test_access_control_on_the_real_path(real_container, tmp_path: Path):
    """Real embedder, real SmolLM2, real Chroma and keyword index, real uvicorn and openai client: a document
    for one group never reaches anyone else, even when it is the best match."""
    from rag.acl import Identity
    from rag.container import Container
    from rag.settings import load_settings
    from rag.store import ChromaStore

    settings = load_settings(data_dir=tmp_path / "data", server={"api_keys": api_key_settings()})
    container = Container(
        settings, real_container.embedder, real_container.engine, ChromaStore(tmp_path / "data" / "chroma", "acl")
    )
    container.load()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "salary-bands.md").write_text(
        "# Salary bands\n\nThe salary band for a senior engineer is 81,500 to 96,500 euros per year.\n"
    )
    (docs / "handbook.md").write_text("# Handbook\n\nSalaries are paid on the last working day of the month.\n")
    service = container.ingest_service()
    service.ingest_paths([docs / "salary-bands.md"], acl=["group:hr"])
    service.ingest_paths([docs / "handbook.md"], acl=["public"])
    question = "What is the salary band for a senior engineer?"

    alice = container.answers.answer(question, identity=Identity.of("alice", ["hr"]))
    assert any("81,500" in c.text for c in alice.chunks)
    assert alice.found and {Path(c.source).name for c in alice.citations} <= {"salary-bands.md", "handbook.md"}
    for who in (Identity.of("bob", ["finance"]), None):
        answer = container.answers.answer(question, identity=who)
        shown = " ".join([answer.answer, *(c.snippet for c in answer.citations), *(c.text for c in answer.chunks)])
        assert "81,500" not in shown and "96,500" not in shown
        assert all(Path(c.source).name == "handbook.md" for c in answer.citations)
    with running(create_app(container=container)) as url:
        # Over HTTP the caller's API key is the identity: alice's key (group hr) and bob's (engineering).
        def ask(key: str) -> str:
            client = openai.OpenAI(base_url=url + "/v1", api_key=TEST_KEYS[key][0], max_retries=0)
            response = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": question}], max_tokens=60
            )
            return response.choices[0].message.content + json.dumps(response.model_extra["citations"])

        assert "salary-bands.md" in ask("alice")
        shown = ask("bob")
        assert "81,500" not in shown and "salary-bands.md" not in shown
    container.store.close()


def test_derived_model_files_are_in_the_machine_cache_not_the_data_dir(real_container):
    """The int8 ONNX embedder and the converted GGUF weights are built once per machine (``cache_dir``, keyed by
    the source weights' hash) and shared by every data dir: a new data dir costs no conversion."""
    settings = real_container.settings
    names = sorted(p.name for p in settings.cache_dir.iterdir())
    assert any(n.startswith("embed-") and n.endswith("-int8.onnx") for n in names), names
    assert f"converted-{real_container.engine.model_sha256[:16]}" in names, names
    assert not (settings.data_dir / "models").exists()
    from rag.settings import load_settings

    assert load_settings(data_dir=settings.data_dir.parent / "another").cache_dir == settings.cache_dir
