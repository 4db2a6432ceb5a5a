"""`rag eval`: run the real pipeline over a dataset, one question at a time, and score every answer.

Each question is answered exactly as the chat endpoint answers it (``AnswerService``), so its timings are the
product's. For the rank metrics the question is also retrieved once more at depth ``RANK_DEPTH`` (hit@10 and
nDCG@10 need ten results; the answer itself uses ``retrieval.top_k``).

Cost per 1,000 queries = measured wall seconds per query (queries run one after another, so the machine does
nothing else meanwhile) x the configured hardware price per hour. The same queries' prompt and completion token
counts, priced at each configured per-token API price, are shown beside it.
"""

from __future__ import annotations

import hashlib
import os
import platform
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from eval import metrics as m
from eval.dataset import EvalItem
from eval.judge import Judge
from eval.schema import CitedItem, CostReport, EvalReport, Provenance, QuestionResult, RetrievedItem
from eval.settings import eval_settings
from rag import verify
from rag.container import Container
from rag.schemas import Answer, RetrievedChunk

RANK_DEPTH = 10
Progress = Callable[[QuestionResult], None]


def run_eval(
    container: Container,
    items: Sequence[EvalItem],
    *,
    dataset_path: Path,
    config: str = "defaults",
    judge: Judge | None = None,
    progress: Progress | None = None,
) -> EvalReport:
    started_at = _now()
    results = []
    for item in items:
        result = evaluate_one(container, item, judge)
        results.append(result)
        if progress:
            progress(result)
    settings = eval_settings(container.settings)
    summary = summarize(results)
    cost = cost_report(results, settings.hardware, settings.price_per_hour, settings.currency, settings.api_prices)
    summary["cost_per_1k"] = cost.cost_per_1k
    return EvalReport(
        run_id=f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}",
        started_at=started_at,
        finished_at=_now(),
        config=config,
        summary=summary,
        counts=counts(results),
        cost=cost,
        provenance=provenance(container, dataset_path, items, judge),
        questions=results,
    )


def evaluate_one(container: Container, item: EvalItem, judge: Judge | None = None) -> QuestionResult:
    reference = item.reference_text or (f"/{item.reference_regex}/" if item.reference_regex else None)
    try:
        answer = container.answers.answer(item.question)
        ranked = container.retriever.retrieve(item.question, RANK_DEPTH)
    except Exception as exc:  # one failing question is reported, and the run goes on
        return QuestionResult(
            id=item.id,
            question=item.question,
            answerable=item.answerable,
            reference=reference,
            gold_sources=item.gold_sources,
            answer="",
            refused=False,
            verdict="error",
            retrieved=[],
            citations=[],
            scores={},
            error=f"{type(exc).__name__}: {exc}",
        )
    scores = score(item, answer, ranked)
    result = QuestionResult(
        id=item.id,
        question=item.question,
        answerable=item.answerable,
        reference=reference,
        gold_sources=item.gold_sources,
        answer=answer.answer,
        refused=not answer.found,
        verdict=verdict(item, answer, scores),
        retrieved=[
            RetrievedItem(
                rank=rank,
                source=c.source,
                chunk_id=c.id,
                score=round(c.score, 4),
                gold=_label(c, item.gold_sources) is not None,
            )
            for rank, c in enumerate(ranked, start=1)
        ],
        citations=[
            CitedItem(
                index=c.index,
                source=c.source,
                chunk_id=c.chunk_id,
                gold=m.is_gold(c.source, c.document_id, item.gold_sources) if item.gold_sources else None,
                attributed=c.attributed,
            )
            for c in answer.citations
        ],
        scores=scores,
        retrieval_ms=answer.timings.retrieval_ms,
        ttft_ms=answer.timings.time_to_first_token_ms,
        latency_ms=answer.timings.total_ms,
        generation_ms=answer.timings.generation_ms if answer.usage.completion_tokens else None,
        prompt_tokens=answer.usage.prompt_tokens,
        completion_tokens=answer.usage.completion_tokens,
        support=answer.support,
        failed_claims=answer.failed_claims,
        declined=answer.declined,
    )
    if judge is not None and answer.found:
        result.judge = judge.grade(item.question, reference, answer.answer, cited_texts(answer))
    return result


def _label(chunk: RetrievedChunk, gold: Sequence[str]) -> str | None:
    return m.gold_label(chunk.source, str(chunk.metadata.get("doc_id", "")) or None, gold)


def cited_texts(answer: Answer) -> list[str]:
    """The text of each cited passage: as the citation carries it, else the retrieved chunk's."""
    by_id = {c.id: c.text for c in answer.chunks}
    return [c.text or by_id[c.chunk_id] for c in answer.citations if c.text or c.chunk_id in by_id]


def holds_reference(item: EvalItem, text: str) -> float:
    """1 when ``text`` holds the item's reference answer (its regex, or the normalised text), nan without one."""
    if item.reference_regex is not None:
        return m.regex_match(text, item.reference_regex)
    return m.reference_contained(text, item.reference_text)


def score(item: EvalItem, answer: Answer, ranked: Sequence[RetrievedChunk]) -> dict[str, float]:
    """Every per-question score; ``nan`` where undefined (see ``eval.metrics``)."""
    gold = item.gold_sources if item.answerable else []
    labels = [_label(c, gold) for c in ranked]
    text, answered = answer.answer, answer.found
    scores = {
        "hit@1": m.hit_at_k(labels, gold, 1),
        "hit@5": m.hit_at_k(labels, gold, 5),
        "hit@10": m.hit_at_k(labels, gold, 10),
        "mrr": m.reciprocal_rank(labels, gold),
        "ndcg@10": m.ndcg_at_k(labels, gold, 10),
        "correctness": m.NAN,
        "exact_match": m.NAN,
        "token_f1": m.NAN,
        "groundedness": m.groundedness(text, cited_texts(answer)) if answered else m.NAN,
        "citation_precision": m.citation_precision(
            [m.gold_label(c.source, c.document_id, gold) for c in answer.citations], gold
        ),
        "citation_validity": m.citation_validity(text, {c.index for c in answer.citations}) if answered else m.NAN,
        # Checked here, apart from the answer service's own check: any value of the answer its cited passages lack.
        # (what the question itself names is not counted: restating it states nothing new)
        "unsupported_values": (
            (1.0 if verify.check(text, cited_texts(answer), item.question).failed else 0.0) if answered else m.NAN
        ),
        "context_holds_reference": holds_reference(item, "\n".join(answer.context)) if item.answerable else m.NAN,
    }
    if item.answerable:
        said = text if answered else ""  # a refusal states no fact, whatever words it shares with the reference
        if item.reference_regex is not None:
            scores["correctness"] = m.regex_match(said, item.reference_regex)
        elif item.reference_text is not None:
            scores["correctness"] = m.reference_contained(said, item.reference_text)
            scores["exact_match"] = m.exact_match(" ".join(m.sentences(said)), item.reference_text)  # no [n]
            scores["token_f1"] = m.token_f1(said, item.reference_text)
    return scores


def verdict(item: EvalItem, answer: Answer, scores: dict[str, float]) -> str:
    if not item.answerable:
        return "correct refusal" if not answer.found else "answered unanswerable"
    if not answer.found:
        return "false refusal"
    return "correct" if scores["correctness"] == 1.0 else "wrong"


def summarize(results: Sequence[QuestionResult]) -> dict[str, float]:
    done = [r for r in results if r.verdict != "error"]
    summary: dict[str, float] = {}
    for key in ("hit@1", "hit@5", "hit@10", "mrr", "ndcg@10", "correctness", "exact_match", "token_f1"):
        summary[key] = m.mean(_score(r, key) for r in done)
    for key in (
        "groundedness",
        "citation_precision",
        "citation_validity",
        "unsupported_values",
        "context_holds_reference",
    ):
        summary[key] = m.mean(_score(r, key) for r in done)
    abstention = m.abstention([r.refused for r in done], [r.answerable for r in done]) if done else {}
    summary["abstention_accuracy"] = abstention.get("accuracy", m.NAN)
    summary["correct_refusal_rate"] = abstention.get("correct_refusal_rate", m.NAN)
    summary["false_refusal_rate"] = abstention.get("false_refusal_rate", m.NAN)
    for name, values in (
        ("retrieval_ms", [r.retrieval_ms for r in done]),
        ("ttft_ms", [r.ttft_ms for r in done]),
        ("latency_ms", [r.latency_ms for r in done]),
    ):
        defined = [v for v in values if v is not None]
        summary[f"{name}_p50"] = m.percentile(defined, 50)
        summary[f"{name}_p95"] = m.percentile(defined, 95)
    generated = [r for r in done if r.generation_ms]
    seconds = sum(r.generation_ms or 0 for r in generated) / 1000
    summary["tokens_per_s"] = sum(r.completion_tokens for r in generated) / seconds if seconds else m.NAN
    judged = [r.judge for r in done if r.judge]
    if judged:
        for key in ("correct", "faithful"):
            values = [1.0 if j[key] else 0.0 for j in judged if j.get(key) is not None]
            summary[f"judge_{'correctness' if key == 'correct' else 'faithfulness'}"] = m.mean(values)
    return summary


def _score(result: QuestionResult, key: str) -> float:
    value = result.scores.get(key)
    return m.NAN if value is None else value


def counts(results: Sequence[QuestionResult]) -> dict[str, int]:
    out = {"questions": len(results), "answerable": sum(r.answerable for r in results)}
    out["unanswerable"] = out["questions"] - out["answerable"]
    for name in ("correct", "wrong", "false refusal", "correct refusal", "answered unanswerable", "error"):
        out[name.replace(" ", "_")] = sum(1 for r in results if r.verdict == name)
    return out


def cost_report(
    results: Sequence[QuestionResult], hardware: str, price_per_hour: float, currency: str, api_prices: dict
) -> CostReport:
    done = [r for r in results if r.latency_ms is not None]
    seconds = sum(r.latency_ms or 0 for r in done) / 1000
    prompt = m.mean(float(r.prompt_tokens) for r in done)
    completion = m.mean(float(r.completion_tokens) for r in done)
    api = {}
    if done:
        for name, price in api_prices.items():
            api[name] = m.api_cost_per_1000_queries(
                prompt, completion, price.input_per_million, price.output_per_million
            )
    return CostReport(
        hardware=hardware,
        price_per_hour=price_per_hour,
        currency=currency,
        compute_seconds=seconds,
        queries=len(done),
        cost_per_1k=m.cost_per_1000_queries(seconds, len(done), price_per_hour) if done else None,
        mean_prompt_tokens=None if not done else prompt,
        mean_completion_tokens=None if not done else completion,
        api_cost_per_1k=api,
    )


def registry_state(container: Container) -> dict[str, Any]:
    """What the index held: the same documents at the same content give the same registry hash."""
    store = container.store
    indexed = sorted(store.docstore.documents("indexed"), key=lambda r: r.doc_id)
    digest = hashlib.sha256()
    for record in indexed:
        digest.update(f"{record.doc_id}\t{record.content_hash}\t{record.version}\t{record.chunk_count}\n".encode())
    return {
        "documents": len(indexed),
        "chunks": store.count(),
        "registry_sha256": digest.hexdigest(),
        "collection": container.settings.collection,
        "data_dir": str(container.settings.data_dir),
    }


def provenance(container: Container, dataset_path: Path, items: Sequence[EvalItem], judge: Judge | None) -> Provenance:
    settings = container.settings
    llm = settings.llm
    return Provenance(
        model_id=container.engine.model_id,
        model_sha256=container.engine.model_sha256,
        model_source=llm.model + (f" ({llm.gguf_file})" if llm.gguf_file else ""),
        embedder_id=container.embedder.model_id,
        embedder_fingerprint=str(container.embedder.fingerprint),
        index=registry_state(container),
        dataset={
            "path": str(dataset_path),
            "sha256": hashlib.sha256(Path(dataset_path).read_bytes()).hexdigest(),
            "questions": len(items),
            "answerable": sum(i.answerable for i in items),
            "unanswerable": sum(not i.answerable for i in items),
        },
        settings=settings.model_dump(mode="json"),
        versions=_versions(),
        machine=_machine(),
        judge=judge.describe() if judge else None,
    )


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("private-rag", "torch", "transformers", "sentence-transformers", "onnxruntime", "chromadb"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def _machine() -> dict[str, Any]:
    import psutil
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
