"""Smoke tests of the evaluation scripts on the real embedder (torch backend), each well under a minute."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLE_CORPUS = REPO / "ingest" / "sample_corpus"


PAGE = """<!DOCTYPE html>
<html><head><title>{title}</title></head>
<body>
<h1>{title}</h1>
<h2>Overview</h2>
<p>{title} explains how the {topic} subsystem stores its records and how operators rotate them safely.</p>
<p>Every record carries a checksum; a record whose checksum does not match is moved to quarantine.</p>
<h2>Configuration of the {topic} store</h2>
<ul><li>retention: days to keep records (default 30)</li><li>compress: gzip old segments</li></ul>
<table><tr><th>Option</th><th>Default</th></tr><tr><td>retention</td><td>30</td></tr></table>
<pre>{topic}ctl rotate --keep 30</pre>
</body></html>
"""


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_retrieval_quality_on_the_sample_corpus(tmp_path: Path):
    from eval.retrieval_quality import QualityResult, evaluate, ingest_for_eval, load_dataset

    queries = load_dataset(REPO / "eval" / "datasets" / "sample_smoke.jsonl")
    assert queries and all(q.gold_sources for q in queries)
    indexed = ingest_for_eval([SAMPLE_CORPUS], tmp_path / "data", "torch")
    result = evaluate(indexed, queries, k=5, name="sample", backend="torch")

    assert isinstance(result, QualityResult) and result.n == len(queries)
    assert 0.0 < result.hit_at_k <= 1.0
    assert 0.0 < result.mrr <= result.hit_at_k
    sample_files = {p.name for p in SAMPLE_CORPUS.iterdir()}
    for query, r in zip(queries, result.results, strict=True):
        assert r.id == query.id and r.question == query.question and r.gold_sources == query.gold_sources
        assert 0 < len(r.retrieved_sources) <= 5 and set(r.retrieved_sources) <= sample_files
        assert len(r.scores) == len(r.retrieved_sources)
        assert r.scores == sorted(r.scores, reverse=True)
        if r.hit:
            assert 1 <= r.rank <= 5 and r.retrieved_sources[r.rank - 1] in r.gold_sources
            assert not set(r.retrieved_sources[: r.rank - 1]) & set(r.gold_sources)
        else:
            assert r.rank is None and not set(r.retrieved_sources) & set(r.gold_sources)


def test_synthetic_queries_come_from_distinctive_headings(tmp_path: Path):
    from eval.retrieval_quality import name_summary, synthetic_queries

    for number, topic in enumerate(["ledger", "journal", "archive"]):
        (tmp_path / f"page{number}.html").write_text(PAGE.format(title=f"Guide {number}", topic=topic))
    queries = synthetic_queries(sorted(tmp_path.glob("*.html")))
    # "Overview" is on every page and one word: never a query; each page's own configuration heading is.
    assert [(q.question, q.gold_sources) for q in queries] == [
        (f"Configuration of the {topic} store", (f"page{n}.html",))
        for n, topic in enumerate(["ledger", "journal", "archive"])
    ]
    assert name_summary("git-branch -\r\n   List, create, or delete branches") == "List, create, or delete branches"


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_bench_core_timing_without_llamaindex(tmp_path: Path):
    from eval.bench_ingest import corpus_files, run_benchmark

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for number, topic in enumerate(["ledger", "journal", "archive"]):
        (corpus / f"page{number}.html").write_text(PAGE.format(title=f"Guide {number}", topic=topic))
    files = corpus_files(corpus, None)
    assert len(files) == 3

    lines: list[str] = []
    report = run_benchmark(files, backends=["torch"], skip_llamaindex=True, log=lines.append)

    assert report.corpus.files == 3 and report.corpus.documents == 3 and report.corpus.tokens > 0
    assert report.corpus.bytes > 0 and report.corpus.sections > 0
    assert "llama-index" not in report.runs
    ours, raw = report.runs["ours (torch)"], report.runs["raw"]
    for run in (ours, raw):
        assert run.ok, run.error
        assert run.seconds > 0 and run.chunks > 0 and run.embedded_tokens > 0
        assert run.chunks_per_s > 0 and run.embedded_tokens_per_s > 0 and run.load_seconds > 0
        assert run.peak_rss_mib >= run.start_rss_mib > 0
    assert ours.document_tokens == report.corpus.tokens and ours.tokens_per_s > 0
    assert raw.chunks == ours.chunks  # raw encodes exactly the texts our chunker embedded
    assert report.ru_maxrss_self_mib > 0
    assert report.ratio("ours (torch)", "raw", "embedded_tokens_per_s") > 0
    assert any(line.startswith("corpus: 3 files") for line in lines)


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_bench_retrieval_runs_at_a_small_size(capsys):
    """The latency benchmark's own path at 2,000 chunks: every timing is measured and printed, and the corpus
    it builds has documents the benchmark identity may not see (so the access filter has work to do)."""
    from eval.bench_retrieval import GROUPS, document_acl, run
    from rag.container import build_embedder
    from rag.settings import load_settings

    settings = load_settings()
    embedder = build_embedder(settings)
    embedder.load()
    times = run(2000, 12, embedder, settings.retrieval)
    assert len(times["total"]) == 12 and all(t > 0 for t in times["total"])
    assert len(times["chroma_where"]) == 12 and all(t > 0 for t in times["chroma_bare"])
    printed = capsys.readouterr().out
    assert "2,000 chunks (200 documents)" in printed and "ours p95 / Chroma bare p95" in printed
    permitted = {"public", f"group:{GROUPS[1]}", f"group:{GROUPS[3]}"}
    assert sum(1 for d in range(200) if set(document_acl(d)) & permitted) < 200  # some are forbidden


def test_quality_table_compares_the_last_variant_with_the_first():
    from eval.retrieval_quality import QualityResult, QueryResult, paired, table

    def result(variant: str, ranks: list[int | None]) -> QualityResult:
        """Each query's gold file a.md at its rank among five retrieved files, or not among them."""
        out = QualityResult("sample", variant, 5)
        for i, rank in enumerate(ranks):
            sources = [("a.md" if n == rank else "b.md") for n in range(1, 6)]
            out.results.append(QueryResult(f"q{i}", "?", ("a.md",), "", sources, [1.0] * 5))
            assert out.results[-1].rank == rank
        return out

    dense = result("x:dense", [1, 2, None, 1])
    hybrid = result("x:hybrid", [1, 1, 3, 2])
    # hybrid: 1 hit dense lacks (q2), none lost; better gold rank on q1 and q2, worse on q3.
    assert paired(hybrid, dense) == (1, 0, 2, 1)
    lines = table({"x:dense": {"sample": dense}, "x:hybrid": {"sample": hybrid}}, ["x:dense", "x:hybrid"], 5)
    assert lines[0].startswith("(variants of x; the last is compared with the first)")
    assert "dense hit@5" in lines[1] and "x:dense" not in lines[1]
    row = lines[3].split()
    assert row[:6] == ["sample", "4", "0.750", "0.625", "1.000", f"{(1 + 1 + 1 / 3 + 0.5) / 4:.3f}"]
    assert row[6:] == ["+25.0", f"{(1 + 1 + 1 / 3 + 0.5) / 4 - 0.625:+.3f}", "1/0", "2/1"]


def test_gpu_benchmark_skips_cleanly_without_a_gpu(tmp_path: Path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: run `make bench-gpu` instead")
    from eval.bench_gpu import main

    assert main(["--out", str(tmp_path)]) == 0
    assert "skipped: no CUDA GPU is visible" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())  # nothing measured, nothing written
