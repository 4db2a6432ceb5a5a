"""`rag eval` wiring over fakes: per-question scores, verdicts, summary, cost, provenance, the judge, compare."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import openai
import pytest

from eval.compare import compare
from eval.dataset import load_dataset
from eval.judge import Judge, parse_verdicts
from eval.runner import run_eval
from rag.generation import Generation, GenerationParams
from serving.app import create_app
from tests.conftest import REPO
from tests.fakes import TEST_KEYS, EchoEngine
from tests.serving.server import running

DATASET = [
    {
        "id": "pass",
        "question": "How long must passphrases be?",
        "reference_answer": "at least 14 characters",
        "gold_sources": ["it.md"],
    },
    {
        "id": "canteen",
        "question": "At what time the canteen opens?",
        "reference_answer": {"regex": "\\b11:30\\b"},
        "gold_sources": ["canteen.md"],
    },
    {"id": "salary", "question": "What is the CEO's annual salary?", "answerable": False},
]


@pytest.fixture
def setup(fake_container, tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "it.md").write_text("# IT security\n\nPassphrases must be at least 14 characters long.\n")
    (docs / "canteen.md").write_text("# Canteen\n\nThe canteen opens at 11:30 and closes at 14:00.\n")
    fake_container.ingest_service().ingest_paths([docs], acl=["public"])
    dataset = tmp_path / "set.jsonl"
    dataset.write_text("\n".join(json.dumps(item) for item in DATASET) + "\n")
    return fake_container, dataset


def test_scores_verdicts_summary_and_cost(setup):
    container, dataset = setup
    seen = []
    report = run_eval(container, load_dataset(dataset), dataset_path=dataset, progress=seen.append)
    assert [r.id for r in seen] == ["pass", "canteen", "salary"]
    by_id = {q.id: q for q in report.questions}

    passphrase = by_id["pass"]  # the answer quotes the best window: the reference is in it
    assert passphrase.verdict == "correct" and "Passphrases must be at least 14" in passphrase.answer
    assert passphrase.support == "verified" and passphrase.scores["unsupported_values"] == 0.0
    assert passphrase.scores["context_holds_reference"] == 1.0
    assert passphrase.scores["hit@1"] == 1.0 and passphrase.scores["mrr"] == 1.0
    assert passphrase.scores["correctness"] == 1.0 and passphrase.scores["exact_match"] == 0.0
    assert 0 < passphrase.scores["token_f1"] < 1
    assert passphrase.citations and all(c.gold for c in passphrase.citations)
    assert passphrase.scores["citation_precision"] == 1.0 and passphrase.scores["citation_validity"] == 1.0
    assert passphrase.scores["groundedness"] == 1.0  # the answer is a sentence of the cited chunk
    assert passphrase.retrieved[0].gold and passphrase.retrieved[0].source.endswith("it.md")

    canteen = by_id["canteen"]
    assert canteen.verdict == "correct" and canteen.scores["correctness"] == 1.0
    assert canteen.scores["exact_match"] is None and canteen.scores["token_f1"] is None  # regex reference only

    salary = by_id["salary"]
    assert salary.answerable is False and salary.scores["hit@5"] is None and salary.scores["correctness"] is None
    assert salary.verdict == ("correct refusal" if salary.refused else "answered unanswerable")

    summary = report.summary
    assert summary["hit@1"] == 1.0 and summary["correctness"] == 1.0  # means over the two answerable questions
    expected_accuracy = (2 + (1 if salary.refused else 0)) / 3
    assert summary["abstention_accuracy"] == pytest.approx(expected_accuracy)
    assert summary["false_refusal_rate"] == 0.0
    latencies = sorted(q.latency_ms for q in report.questions)
    assert summary["latency_ms_p50"] == pytest.approx(latencies[1])
    assert report.counts["questions"] == 3 and report.counts["answerable"] == 2 and report.counts["correct"] == 2

    cost = report.cost
    assert cost.compute_seconds == pytest.approx(sum(latencies) / 1000)
    assert cost.cost_per_1k == pytest.approx(cost.compute_seconds / 3 * 1000 / 3600 * 0.09, rel=1e-3)
    assert summary["cost_per_1k"] == cost.cost_per_1k
    prompt = sum(q.prompt_tokens for q in report.questions) / 3
    completion = sum(q.completion_tokens for q in report.questions) / 3
    mini = cost.api_cost_per_1k["gpt-4o-mini (2025 list)"]
    assert mini == pytest.approx(1000 * (prompt * 0.15 + completion * 0.60) / 1e6)


def test_provenance_names_model_embedder_index_and_dataset(setup, tmp_path: Path):
    container, dataset = setup
    items = load_dataset(dataset)
    first = run_eval(container, items, dataset_path=dataset)
    again = run_eval(container, items, dataset_path=dataset)
    p = first.provenance
    assert p.model_id == "echo" and p.model_sha256 == "0" * 64 and p.embedder_fingerprint == "hash-embedder"
    assert p.index["documents"] == 2 and p.index["chunks"] == container.store.count()
    assert p.dataset["questions"] == 3 and p.dataset["unanswerable"] == 1 and len(p.dataset["sha256"]) == 64
    assert p.settings["retrieval"]["top_k"] == container.settings.retrieval.top_k
    assert {"python", "chromadb", "torch"} <= set(p.versions)
    assert again.provenance.index["registry_sha256"] == p.index["registry_sha256"]  # same index, same hash

    more = tmp_path / "more"
    more.mkdir()
    (more / "parking.md").write_text("# Parking\n\nThe car park closes at 22:00.\n")
    container.ingest_service().ingest_paths([more], acl=["public"])
    changed = run_eval(container, items[:1], dataset_path=dataset)
    assert changed.provenance.index["registry_sha256"] != p.index["registry_sha256"]
    assert changed.provenance.index["documents"] == 3


def test_a_failing_question_is_reported_and_the_run_goes_on(setup, monkeypatch):
    container, dataset = setup
    real = container.answers.answer

    def flaky(question, **kwargs):  # noqa: ANN001, ANN003, ANN202
        if "canteen" in question:
            raise RuntimeError("engine fell over")
        return real(question, **kwargs)

    monkeypatch.setattr(container.answers, "answer", flaky)
    report = run_eval(container, load_dataset(dataset), dataset_path=dataset)
    failed = [q for q in report.questions if q.verdict == "error"]
    assert [q.id for q in failed] == ["canteen"] and "engine fell over" in failed[0].error
    assert report.counts["error"] == 1 and report.cost.queries == 2
    assert report.summary["correctness"] == 1.0  # the error is not scored as a wrong answer


def test_parse_verdicts():
    assert parse_verdicts("CORRECT: yes\nFAITHFUL: no") == {"correct": True, "faithful": False}
    assert parse_verdicts("correct - No. Faithful = YES") == {"correct": False, "faithful": True}
    assert parse_verdicts("I think it is fine.") == {"correct": None, "faithful": None}


class VerdictEngine(EchoEngine):
    """A fake of the generation seam that grades like a judge would."""

    model_id = "grader"
    model_sha256 = "1" * 64

    def __init__(self) -> None:
        super().__init__()
        self.prompts: list[str] = []

    def stream(self, messages, params: GenerationParams, cancel: threading.Event | None = None) -> Generation:  # noqa: ANN001
        self.prompts.append(messages[-1]["content"])
        return Generation(pieces=iter(["CORRECT: yes", "\nFAITHFUL: no"]), prompt_tokens=10, completion_tokens=6)


def test_judge_through_an_openai_compatible_server_without_retrieval(setup):
    """The judge talks to any OpenAI-compatible endpoint; here this project's own server, on its ':no-rag' model,
    so the judge prompt reaches the model as it is, with no retrieval."""
    container, dataset = setup
    from rag.container import Container

    grader = VerdictEngine()
    judge_server = Container(container.settings, container.embedder, grader, container.store)
    judge_server.load()
    with running(create_app(container=judge_server)) as url:
        models = [m.id for m in openai.OpenAI(base_url=url + "/v1", api_key=TEST_KEYS["alice"][0]).models.list().data]
        assert models == ["grader", "grader:no-rag"]
        judge = Judge(url + "/v1", "grader:no-rag", api_key=TEST_KEYS["alice"][0])
        report = run_eval(container, load_dataset(dataset), dataset_path=dataset, judge=judge)
    answered = [q for q in report.questions if not q.refused]
    assert answered and all(
        q.judge == {"correct": True, "faithful": False, "raw": "CORRECT: yes\nFAITHFUL: no"} for q in answered
    )
    assert report.summary["judge_correctness"] == 1.0 and report.summary["judge_faithfulness"] == 0.0
    assert len(grader.prompts) == len(answered)  # one call per answered question, refusals are not judged
    assert all(p.startswith("Question: ") and "Cited passages:" in p for p in grader.prompts)  # no RAG wrapping
    assert report.provenance.judge["model"] == "grader:no-rag"


def test_an_unreachable_judge_is_recorded_not_fatal(setup):
    container, dataset = setup
    judge = Judge("http://127.0.0.1:9/v1", "nobody", timeout_s=2)
    report = run_eval(container, load_dataset(dataset)[:1], dataset_path=dataset, judge=judge)
    [question] = report.questions
    assert question.verdict == "correct" and question.judge["correct"] is None and question.judge["error"]
    assert "judge_correctness" in report.summary and report.summary["judge_correctness"] is None


def test_compare_flags_regressions_beyond_the_thresholds(setup, tmp_path: Path):
    from eval.report import write_reports

    container, dataset = setup
    base = run_eval(container, load_dataset(dataset), dataset_path=dataset)
    worse = base.model_copy(deep=True)
    worse.summary["hit@5"] = base.summary["hit@5"] - 0.05  # beyond 0.02: a regression
    worse.summary["mrr"] = base.summary["mrr"] - 0.01  # within the threshold
    worse.summary["latency_ms_p95"] = base.summary["latency_ms_p95"] * 1.1  # 10% slower: within 20%
    worse.summary["cost_per_1k"] = base.summary["cost_per_1k"] * 1.5  # 50% dearer: a regression
    worse.summary["false_refusal_rate"] = 0.5  # lower is better: up by 0.5
    worse.summary["token_f1"] = None  # undefined on one side: shown, not counted
    result = compare(base, worse, threshold=0.02, speed_threshold=0.2)
    assert {d.metric.key for d in result.regressions} == {"hit@5", "cost_per_1k", "false_refusal_rate"}
    assert compare(worse, base).regressions == []  # every change is an improvement that way round
    assert compare(base, base).regressions == []

    write_reports(base, tmp_path / "a")
    write_reports(worse, tmp_path / "b")
    cli = [sys.executable, "-m", "eval.cli", "eval", "compare"]
    gated = subprocess.run([*cli, str(tmp_path / "a"), str(tmp_path / "b")], cwd=REPO, capture_output=True, text=True)
    assert gated.returncode == 1, gated.stdout + gated.stderr
    assert "REGRESSION" in gated.stdout and "3 regression(s)" in " ".join(gated.stderr.split())
    fine = subprocess.run(
        [*cli, str(tmp_path / "a"), str(tmp_path / "a" / "report.json")], cwd=REPO, capture_output=True, text=True
    )
    assert fine.returncode == 0 and "No regression" in fine.stderr
