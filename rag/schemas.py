"""Records that travel between ingest, store, retrieval, generation and serving."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError, ValidatorFunctionWrapHandler, WrapValidator, field_validator
from pydantic_core import PydanticCustomError


class ChunkRecord(BaseModel):
    """One chunk as written to the store."""

    id: str = Field(description="Deterministic: document id + content hash.")
    text: str = Field(description="The chunk's own text, shown to users and the LLM.")
    embed_text: str = Field(description="What is embedded: title and heading path, then the text.")
    metadata: dict[str, str | int | float | bool]


class RetrievedChunk(BaseModel):
    id: str
    text: str
    score: float = Field(description="Cosine similarity to the query, -1..1.")
    metadata: dict[str, Any]
    fused: float | None = Field(
        None, description="Fusion score that ordered the results (retrieval.fusion: dbsf or rrf)."
    )
    ranks: dict[str, int] = Field(default_factory=dict, description="1-based rank in each leg that found it.")
    rerank: float | None = Field(None, description="Cross-encoder score, when a reranker is configured.")

    @property
    def source(self) -> str:
        return str(self.metadata.get("source", ""))

    @property
    def title(self) -> str:
        return str(self.metadata.get("title", ""))

    @property
    def heading(self) -> str:
        return str(self.metadata.get("heading", ""))

    @property
    def page(self) -> int | None:
        page = self.metadata.get("page", 0)
        return int(page) if page else None


class Citation(BaseModel):
    index: int = Field(description="The n of [n] in the answer.")
    chunk_id: str
    document_id: str
    source: str = Field(description="Path of the original file.")
    title: str
    page: int | None = Field(None, description="1-based page, for paged formats.")
    heading: str = Field("", description="Heading path, ' > ' separated.")
    snippet: str
    score: float
    attributed: str = Field(
        "model",
        description="model: the LLM wrote [n]; overlap: added after generation by text overlap; quote: the answer "
        "is this passage quoted.",
    )
    text: str = Field("", description="The cited passage's text, which quote_start and quote_end index.")
    quote: str = Field("", description="The exact sentence, row or item of the passage that supports the answer.")
    quote_start: int | None = Field(None, description="Offset of the quote's first character in text.")
    quote_end: int | None = Field(None, description="Offset just past the quote's last character in text.")


class Timings(BaseModel):
    retrieval_ms: float = 0.0
    generation_ms: float = 0.0
    time_to_first_token_ms: float | None = None
    total_ms: float = 0.0


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Answer(BaseModel):
    question: str
    retrieval_query: str = Field(
        "", description="What was searched: the question, or its standalone rewrite when a chat history was given."
    )
    answer: str
    found: bool = Field(description="False when nothing relevant was retrieved and the assistant declined.")
    citations: list[Citation]
    chunks: list[RetrievedChunk]
    model: str
    model_sha256: str | None = None
    timings: Timings
    usage: Usage
    support: Literal["verified", "partial", "unverified"] | None = Field(
        None,
        description="How much of what the model wrote its cited passages hold: verified (every number, quantity, "
        "date, version, identifier and quoted name), partial, unverified; null when the assistant declined.",
    )
    failed_claims: list[str] = Field(
        default_factory=list, description="Values the model stated that its cited passages do not hold."
    )
    repair: Literal["none", "quoted", "refused"] = Field(
        "none",
        description="What was done with an answer that was not verified: quoted (the supporting passage is shown, "
        "quoted, instead) or refused; none when the model's answer is shown as written.",
    )
    declined: str | None = Field(None, description="Why the assistant declined to answer; null when it answered.")
    context: list[str] = Field(
        default_factory=list, description="What the model read: the text of each passage in its prompt."
    )

    @property
    def tokens_per_second(self) -> float | None:
        seconds = self.timings.generation_ms / 1000
        return self.usage.completion_tokens / seconds if seconds > 0 and self.usage.completion_tokens else None


class SearchFilters(BaseModel):
    """Narrow a search to some documents; every given field must match. Applied inside both retrieval legs."""

    model_config = {"extra": "forbid"}

    path_prefix: str | None = Field(None, description="Source path starts with this (absolute path).")
    path_glob: str | None = Field(None, description="Source path matches this glob, e.g. */policies/*.md.")
    doc_type: list[str] | None = Field(None, description="Any of these document types: pdf, docx, html, markdown…")
    title: str | None = Field(None, description="Title contains this text (case-insensitive).")
    tags: list[str] | None = Field(None, description="Carries any of these tags (given at ingest, --tag).")
    ingested_after: str | None = Field(None, description="Ingested at or after this ISO date or time.")
    ingested_before: str | None = Field(None, description="Ingested before this ISO date or time.")

    @field_validator("ingested_after", "ingested_before")
    @classmethod
    def _iso_date_or_time(cls, value: str | None) -> str | None:
        """The registry compares ISO text (UTC, ``2025-06-01T09:00:00+00:00``), so anything else (``yesterday``)
        would compare as text and match nonsense: refuse it, and bring a time to the registry's form."""
        if value is None:
            return None
        text = value.strip()
        try:
            return date.fromisoformat(text).isoformat()
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"{value!r} is not an ISO date or time: write e.g. 2025-06-01 or 2025-06-01T09:00:00Z"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)  # the registry's times are UTC
        return moment.astimezone(UTC).isoformat(timespec="seconds")


SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1  # a signed 64-bit integer, as in OpenAI's API; torch takes all of them


def _seed_in_range(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError:  # one message with the whole range, whichever bound (or the type) was wrong
        raise PydanticCustomError(
            "seed_range", f"must be an integer from {SEED_MIN} to {SEED_MAX} (64-bit signed)"
        ) from None


Seed = Annotated[
    int,
    Field(ge=SEED_MIN, le=SEED_MAX, description="Sampling seed: the same seed and input give the same answer."),
    WrapValidator(_seed_in_range),
]
"""A request's sampling seed. Bounded here, at the edge: an unbounded one (2**64) once reached the batch loop and
failed every request generated with it."""
