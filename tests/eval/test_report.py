"""report.json / report.md / report.html from a hand-built EvalReport: round trip, escaping, plots, no network refs."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from eval.report import format_value, load_report, render_html, render_markdown, write_reports
from eval.schema import CitedItem, CostReport, EvalReport, Provenance, QuestionResult, RetrievedItem
from rag.errors import InvalidRequestError

SCRIPT = "<script>alert(1)</script>"


def _question(id_: str, **overrides: object) -> QuestionResult:
    fields: dict[str, object] = {
        "id": id_,
        "question": "How many vacation days do employees get?",
        "answerable": True,
        "reference": "25 days",
        "gold_sources": ["handbook.md"],
        "answer": "Employees get 25 days of vacation [1].",
        "refused": False,
        "verdict": "correct",
        "retrieved": [
            RetrievedItem(rank=1, source="/docs/handbook.md", chunk_id="c1", score=0.9, gold=True),
            RetrievedItem(rank=2, source="/docs/travel.md", chunk_id="c2", score=0.5, gold=False),
        ],
        "citations": [CitedItem(index=1, source="/docs/handbook.md", chunk_id="c1", gold=True, attributed="25 days")],
        "scores": {"hit@1": 1.0, "hit@5": 1.0, "mrr": 1.0, "token_f1": 0.8, "groundedness": 1.0},
        "retrieval_ms": 12.0,
        "ttft_ms": 180.0,
        "latency_ms": 1234.0,
        "generation_ms": 1200.0,
        "prompt_tokens": 900,
        "completion_tokens": 40,
    }
    fields.update(overrides)
    return QuestionResult.model_validate(fields)


def _report(questions: list[QuestionResult] | None = None) -> EvalReport:
    if questions is None:
        questions = [
            _question("q1"),
            _question(
                "q2",
                answer=f"The policy | says {SCRIPT}\nsee the annex [1].",
                verdict="wrong",
                citations=[CitedItem(index=1, source="/docs/travel.md", chunk_id="c2", gold=False, attributed="annex")],
                scores={"hit@1": 0.0, "hit@5": 0.0, "mrr": 0.0, "token_f1": 0.1, "groundedness": 0.5},
                latency_ms=2500.0,
            ),
            _question(
                "q3",
                question="What is the CEO's shoe size?",
                answerable=False,
                reference=None,
                gold_sources=[],
                answer="I don't know based on the documents.",
                refused=True,
                verdict="correct refusal",
                citations=[],
                scores={"hit@1": None, "hit@5": None, "mrr": None, "token_f1": None, "groundedness": None},
                latency_ms=None,
            ),
            _question("q4", latency_ms=4100.0, retrieval_ms=None),
        ]
    return EvalReport(
        run_id="20250101-120000-abc123",
        started_at="2025-01-01T12:00:00Z",
        finished_at="2025-01-01T12:01:00Z",
        config="configs/eval.yaml",
        summary={
            "hit@1": 0.6667,
            "hit@5": 0.75,
            "mrr": 0.5,
            "token_f1": 0.6,
            "groundedness": None,
            "abstention_accuracy": 1.0,
            "latency_ms_p50": 2500.0,
            "latency_ms_p95": 3940.0,
            "tokens_per_s": 33.25,
            "cost_per_1k": 0.0123,
        },
        counts={"questions": 4, "answerable": 3, "unanswerable": 1, "errors": 0},
        cost=CostReport(
            hardware="1x H200",
            price_per_hour=3.5,
            currency="USD",
            compute_seconds=12.6,
            queries=4,
            cost_per_1k=0.0123,
            mean_prompt_tokens=900.0,
            mean_completion_tokens=40.0,
            api_cost_per_1k={"gpt-4o": 2.65, "gpt-4o-mini": 0.159},
        ),
        provenance=Provenance(
            model_id="Qwen/Qwen2.5-7B-Instruct",
            model_sha256="ab" * 32,
            model_source="local",
            embedder_id="all-MiniLM-L6-v2",
            embedder_fingerprint="emb-fp-1234",
            index={"documents": 12, "chunks": 345, "registry_sha256": "cd" * 32, "collection": "docs"},
            dataset={"path": "eval/datasets/sample.jsonl", "sha256": "ef" * 32, "questions": 4},
            settings={"top_k": 5},
            versions={"python": "3.11.2", "rag": "0.1.0"},
            machine={"gpu": "H200", "cpus": 16},
        ),
        questions=questions,
    )


class _Collector(HTMLParser):
    """Collects the start tags and every src/href value it meets."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.links += [value or "" for name, value in attrs if name in ("src", "href", "xlink:href")]


def _parse(html: str) -> _Collector:
    parser = _Collector()
    parser.feed(html)
    parser.close()
    return parser


# -- files and round trip -----------------------------------------------------------------------------------------


def test_write_reports_creates_three_files_and_round_trips(tmp_path: Path) -> None:
    report = _report()
    out = tmp_path / "runs" / "r1"
    paths = write_reports(report, out)
    assert set(paths) == {"json", "md", "html"}
    assert paths == {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html"}
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    assert load_report(out) == report
    assert load_report(paths["json"]) == report


# -- HTML ---------------------------------------------------------------------------------------------------------


def test_html_is_self_contained_escaped_and_has_plots() -> None:
    html = render_html(_report())
    parser = _parse(html)
    assert parser.tags.count("svg") >= 2
    assert html.count("<svg") >= 2
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert" not in html
    assert "script" not in parser.tags
    external = [link for link in parser.links if re.match(r"\s*(https?:)?//", link)]
    assert external == []
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html)
    assert "<?xml" not in html and "<!DOCTYPE svg" not in html
    assert "[1] handbook.md ✓gold" in html
    assert "verdict-correct-refusal" in html


def test_html_svg_ids_are_unique() -> None:
    ids = re.findall(r'\bid="([^"]+)"', render_html(_report()))
    assert len(ids) == len(set(ids))


def test_html_without_latencies_or_costs_shows_no_data_notes() -> None:
    report = _report([_question(f"q{i}", latency_ms=None) for i in range(3)])
    report.summary = {"hit@5": None, "latency_ms_p50": None}
    report.cost.cost_per_1k = None
    report.cost.api_cost_per_1k = {}
    html = render_html(report)
    _parse(html)
    assert "<svg" not in html
    assert html.count('class="nodata"') == 3
    assert "n/a" in render_markdown(report)


def test_html_with_all_latencies_missing_still_plots_scores() -> None:
    report = _report([_question(f"q{i}", latency_ms=None) for i in range(3)])
    html = render_html(report)
    assert "No data: no latency was measured." in html
    assert html.count("<svg") == 2  # scores and cost


# -- Markdown -----------------------------------------------------------------------------------------------------


def test_markdown_summary_cost_provenance_and_questions() -> None:
    md = render_markdown(_report())
    assert md.startswith("# Eval run 20250101-120000-abc123")
    assert "configs/eval.yaml" in md
    assert "| retrieval | hit@1 | 0.667 | higher |" in md
    assert "|  | hit@5 | 0.750 | higher |" in md
    assert "| groundedness | n/a | higher |" in md
    assert "| total latency p50 | 2,500 ms | lower |" in md
    assert "| generation tokens/s | 33.2 tok/s | higher |" in md
    assert "ndcg" not in md.lower()  # absent from the summary: left out
    assert "**cost per 1,000 queries**: $0.0123" in md
    assert "| gpt-4o | $2.6500 | 215.4× |" in md
    assert "**mean prompt tokens**: 900.0" in md
    assert "**price per hour**: $3.50" in md
    assert "ab" * 32 in md and "emb-fp-1234" in md and "cd" * 32 in md and "ef" * 32 in md
    assert "12 documents, 345 chunks" in md
    assert "python 3.11.2" in md


def test_markdown_question_rows_are_escaped_and_one_line() -> None:
    md = render_markdown(_report())
    row = next(line for line in md.splitlines() if line.startswith("| q2 |"))
    assert "The policy \\| says \\<script\\>alert(1)\\</script\\> see the annex [1]." in row
    assert row.count(" | ") == 4  # five cells: the answer's pipe is escaped
    assert "| q3 | correct refusal |" in md
    assert "[1] handbook.md ✓gold" in md


def test_markdown_truncates_long_answers() -> None:
    md = render_markdown(_report([_question("long", answer="word " * 100)]))
    row = next(line for line in md.splitlines() if line.startswith("| long |"))
    answer = row.split(" | ")[2]
    assert answer.endswith("…") and len(answer) <= 120


# -- format_value -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("hit@5", None, "n/a"),
        ("hit@5", 0.75, "0.750"),
        ("mrr", 1 / 3, "0.333"),
        ("not_a_metric", 0.5, "0.500"),
        ("latency_ms_p50", 1234.6, "1,235 ms"),
        ("retrieval_ms_p95", 12.2, "12 ms"),
        ("tokens_per_s", 33.25, "33.2 tok/s"),
        ("tokens_per_s", 1234.56, "1,234.6 tok/s"),
        ("cost_per_1k", 0.0123, "$0.0123"),
        ("cost_per_1k", 12.5, "$12.5000"),
        ("cost_per_1k", 0.0, "$0.0000"),
        ("cost_per_1k", 0.0000123, "$0.000012"),
    ],
)
def test_format_value(key: str, value: float | None, expected: str) -> None:
    assert format_value(key, value) == expected


def test_format_value_other_currencies() -> None:
    assert format_value("cost_per_1k", 0.0123, currency="EUR") == "€0.0123"
    assert format_value("cost_per_1k", 0.0123, currency="CHF") == "0.0123 CHF"


# -- load_report errors -------------------------------------------------------------------------------------------


def test_load_report_missing(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="No eval report.*run directory.*report.json"):
        load_report(tmp_path)
    with pytest.raises(InvalidRequestError, match="No eval report"):
        load_report(tmp_path / "nope.json")


def test_load_report_not_json(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InvalidRequestError, match="is not JSON.*run directory"):
        load_report(tmp_path)


@pytest.mark.parametrize("content", ['{"format": "other/2"}', "[1, 2]", '{"run_id": "x"}'])
def test_load_report_wrong_format(tmp_path: Path, content: str) -> None:
    path = tmp_path / "report.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidRequestError, match="not a rag-eval/1 report.*run directory"):
        load_report(path)


def test_load_report_invalid_fields(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text('{"format": "rag-eval/1", "run_id": "x"}', encoding="utf-8")
    with pytest.raises(InvalidRequestError, match="invalid fields.*started_at"):
        load_report(path)
