"""What `rag eval` writes: one ``EvalReport`` per run, saved as report.json and rendered as Markdown and HTML.

Undefined scores (no gold source, no reference, an empty answer) are ``None`` in the report, never 0, and the
aggregates skip them. ``METRICS`` names every summary figure, its group, and which direction is better, so the
renderers and ``rag eval compare`` agree on them.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

Better = Literal["higher", "lower"]


class Metric(BaseModel):
    key: str
    label: str
    group: Literal["retrieval", "answer", "abstention", "speed", "cost", "judge"]
    better: Better
    unit: str = ""  # "" for a 0..1 score; "ms", "tok/s", or a currency for the rest


METRICS: list[Metric] = [
    Metric(key="hit@1", label="hit@1", group="retrieval", better="higher"),
    Metric(key="hit@5", label="hit@5", group="retrieval", better="higher"),
    Metric(key="hit@10", label="hit@10", group="retrieval", better="higher"),
    Metric(key="mrr", label="MRR", group="retrieval", better="higher"),
    Metric(key="ndcg@10", label="nDCG@10", group="retrieval", better="higher"),
    Metric(key="correctness", label="answer correctness", group="answer", better="higher"),
    Metric(key="exact_match", label="exact match", group="answer", better="higher"),
    Metric(key="token_f1", label="token F1", group="answer", better="higher"),
    Metric(key="groundedness", label="groundedness", group="answer", better="higher"),
    Metric(key="citation_precision", label="citation precision", group="answer", better="higher"),
    Metric(key="citation_validity", label="citation validity", group="answer", better="higher"),
    Metric(key="unsupported_values", label="answers with a value not in their sources", group="answer", better="lower"),
    Metric(key="context_holds_reference", label="model input holds the reference", group="answer", better="higher"),
    Metric(key="abstention_accuracy", label="abstention accuracy", group="abstention", better="higher"),
    Metric(key="correct_refusal_rate", label="correct refusals", group="abstention", better="higher"),
    Metric(key="false_refusal_rate", label="false refusals", group="abstention", better="lower"),
    Metric(key="retrieval_ms_p50", label="retrieval p50", group="speed", better="lower", unit="ms"),
    Metric(key="retrieval_ms_p95", label="retrieval p95", group="speed", better="lower", unit="ms"),
    Metric(key="ttft_ms_p50", label="time to first token p50", group="speed", better="lower", unit="ms"),
    Metric(key="ttft_ms_p95", label="time to first token p95", group="speed", better="lower", unit="ms"),
    Metric(key="latency_ms_p50", label="total latency p50", group="speed", better="lower", unit="ms"),
    Metric(key="latency_ms_p95", label="total latency p95", group="speed", better="lower", unit="ms"),
    Metric(key="tokens_per_s", label="generation tokens/s", group="speed", better="higher", unit="tok/s"),
    Metric(key="cost_per_1k", label="cost per 1,000 queries", group="cost", better="lower", unit="$"),
    Metric(key="judge_correctness", label="judge: correct", group="judge", better="higher"),
    Metric(key="judge_faithfulness", label="judge: faithful", group="judge", better="higher"),
]
METRIC_BY_KEY = {m.key: m for m in METRICS}


def finite(value: float | None) -> float | None:
    """``None`` for NaN (JSON has no NaN), the value otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


class RetrievedItem(BaseModel):
    rank: int
    source: str
    chunk_id: str
    score: float
    gold: bool


class CitedItem(BaseModel):
    index: int
    source: str
    chunk_id: str
    gold: bool | None = Field(None, description="From a gold source; None when the question has none.")
    attributed: str


class QuestionResult(BaseModel):
    id: str
    question: str
    answerable: bool
    reference: str | None = Field(None, description="The reference answer, or /regex/.")
    gold_sources: list[str]
    answer: str
    refused: bool
    verdict: Literal["correct", "wrong", "correct refusal", "false refusal", "answered unanswerable", "error"]
    retrieved: list[RetrievedItem]
    citations: list[CitedItem]
    scores: dict[str, float | None]
    retrieval_ms: float | None = None
    ttft_ms: float | None = None
    latency_ms: float | None = None
    generation_ms: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    judge: dict[str, Any] | None = None
    support: str | None = Field(None, description="verified, partial or unverified; null for a refusal.")
    failed_claims: list[str] = Field(default_factory=list)
    declined: str | None = None
    error: str | None = None

    @field_validator("scores")
    @classmethod
    def no_nan(cls, scores: dict[str, float | None]) -> dict[str, float | None]:
        return {k: finite(v) for k, v in scores.items()}


class CostReport(BaseModel):
    hardware: str
    price_per_hour: float
    currency: str
    compute_seconds: float = Field(description="Measured wall seconds of all queries, run one at a time.")
    queries: int
    cost_per_1k: float | None
    mean_prompt_tokens: float | None
    mean_completion_tokens: float | None
    api_cost_per_1k: dict[str, float] = Field(
        default_factory=dict, description="The same queries' token counts at each configured per-token API price."
    )


class Provenance(BaseModel):
    model_id: str
    model_sha256: str | None
    model_source: str
    embedder_id: str
    embedder_fingerprint: str
    index: dict[str, Any] = Field(description="documents, chunks, registry_sha256, collection, data_dir")
    dataset: dict[str, Any] = Field(description="path, sha256, questions, answerable, unanswerable")
    settings: dict[str, Any]
    versions: dict[str, str]
    machine: dict[str, Any]
    judge: dict[str, Any] | None = None


class EvalReport(BaseModel):
    format: Literal["rag-eval/1"] = "rag-eval/1"
    run_id: str
    started_at: str
    finished_at: str
    config: str = Field(description="The settings profile that ran (a file path, or 'defaults').")
    summary: dict[str, float | None]
    counts: dict[str, int]
    cost: CostReport
    provenance: Provenance
    questions: list[QuestionResult]

    @field_validator("summary")
    @classmethod
    def no_nan(cls, summary: dict[str, float | None]) -> dict[str, float | None]:
        return {k: finite(v) for k, v in summary.items()}
