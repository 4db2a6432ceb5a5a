"""From feedback to an eval run, for real: questions asked in a conversation through a real server (the real
embedder, SmolLM2 and Chroma over the sample corpus), rated, exported with `rag feedback export`, and scored by
`rag eval` in its own process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from eval.cli import app as rag
from eval.dataset import load_dataset
from eval.report import load_report
from eval.settings import FullSettings
from rag.container import Container
from serving.app import create_app
from tests.conftest import REPO
from tests.fakes import auth
from tests.serving.server import running

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RATED = {  # from the bundled set: two answerable questions, one the documents cannot answer
    "What service must I use to send Restricted data to someone outside the company?": "up",
    "How long after an incident is resolved does its chat channel get archived?": "down",
    "When does the annual salary review take place?": "up",
}


def test_rated_answers_export_to_a_dataset_that_rag_eval_scores(
    real_container: Container, real_data_dir: Path, tmp_path: Path
):
    answers = {}
    with running(create_app(container=real_container)) as url, httpx.Client(base_url=url, timeout=300) as http:
        cid = http.post("/v1/conversations", json={"title": "Feedback run"}, headers=auth("alice")).json()["id"]
        for question, rating in RATED.items():
            said = http.post(
                "/v1/query", json={"question": question, "conversation_id": cid, "history": []}, headers=auth("alice")
            )
            assert said.status_code == 200, said.text
            answers[question] = said.json()
            rated = {"message_id": said.json()["message_id"], "rating": rating, "comment": f"{rating} for the test"}
            assert http.post("/v1/feedback", json=rated, headers=auth("alice")).status_code == 201
        view = http.get("/v1/admin/feedback", headers=auth("admin")).json()["data"]
    assert {r["question"] for r in view} >= set(RATED)

    out = tmp_path / "feedback.jsonl"
    exported = CliRunner().invoke(
        rag, ["--data-dir", str(real_data_dir), "feedback", "export", "--out", str(out)], obj=FullSettings
    )
    assert exported.exit_code == 0, exported.output
    items = {i.question: i for i in load_dataset(out)}
    assert set(items) == set(RATED)
    found = answers[next(iter(RATED))]
    assert found["found"] and items[next(iter(RATED))].gold_sources == list(
        dict.fromkeys(c["source"] for c in found["citations"])
    )
    assert items[next(iter(RATED))].reference_answer  # the cited quote, or the answer text
    down = items["How long after an incident is resolved does its chat channel get archived?"]
    assert down.reference_answer is None and down.gold_sources == []
    declined = answers["When does the annual salary review take place?"]
    assert items["When does the annual salary review take place?"].answerable is (declined["found"])

    real_container.store.close()  # one process per embedded store: `rag eval` opens it now
    run = tmp_path / "run"
    command = [sys.executable, "-m", "eval.cli", "--data-dir", str(real_data_dir), "eval"]
    done = subprocess.run(
        [*command, "--dataset", str(out), "--out", str(run)], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    report = load_report(run)
    assert sorted(q.id for q in report.questions) == sorted(i.id for i in items.values())
    assert report.counts["questions"] == len(RATED) and report.counts.get("error", 0) == 0
    assert all(q.verdict != "error" for q in report.questions)
