"""Native routes: /v1/query (answer + citations + chunks + timings), /v1/retrieve, health and readiness."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from rag.documents import DocumentPreview, original_file, preview
from rag.errors import (
    EngineStoppedError,
    ModelLoadFailedError,
    ModelNotReadyError,
    NotFoundError,
    StoreUnavailableError,
)
from rag.schemas import RetrievedChunk, SearchFilters, Seed
from serving.auth import PrincipalDep
from serving.conversations_api import ConversationAnswer, asked_in
from serving.deps import AuditDep, ContainerDep, ReadyContainerDep, RouteAudit, check_prompt_size, has_capacity
from serving.observability import metrics_text

router = APIRouter()


class ChatTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: str = Field(max_length=8000)


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field (`top-k`, `filter`) is a 400, not ignored
    question: str = Field(min_length=1, max_length=4000, description="What the employee asks.")
    top_k: int | None = Field(None, ge=1, le=100, description="Chunks to retrieve; default from settings.")
    max_tokens: int | None = Field(None, ge=1, description="Cap on generated tokens.")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    seed: Seed | None = None
    filters: SearchFilters | None = Field(None, description="Only search documents that match these.")
    history: list[ChatTurn] = Field(
        default_factory=list,
        max_length=50,
        description="Earlier turns of the chat; a follow-up question is rewritten into a standalone query.",
    )
    conversation_id: str | None = Field(
        None,
        max_length=100,
        description="Save the question and answer in this conversation of yours; without a history, its last "
        "turns are the history.",
    )


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=4000)
    top_k: int | None = Field(None, ge=1, le=100)
    filters: SearchFilters | None = Field(None, description="Only search documents that match these.")
    mode: Literal["hybrid", "dense", "keyword"] | None = Field(None, description="Default from settings.")


class RetrieveResponse(BaseModel):
    query: str
    chunks: list[RetrievedChunk]
    retrieval_ms: float


@router.post("/v1/query", response_model=ConversationAnswer, tags=["native"])
async def query(
    body: QueryRequest, request: Request, principal: PrincipalDep, container: ReadyContainerDep, audit: AuditDep
) -> ConversationAnswer:
    """Answer with citations, from the documents the caller's key may see."""
    asked = await run_in_threadpool(asked_in, request, principal, audit, body.conversation_id)
    check_prompt_size(container, [body.question, *(t.content for t in body.history)])
    has_capacity(container)
    history = [t.model_dump() for t in body.history]
    if asked is not None and not history:
        history = await run_in_threadpool(asked.history, container, principal)
    service = container.answers
    params = service.params(body.max_tokens, body.temperature, None, body.seed)
    answer = await run_in_threadpool(
        partial(
            service.answer,
            top_k=body.top_k,
            params=params,
            identity=principal.identity,
            filters=body.filters,
            history=history,
        ),
        body.question,
    )
    audit.answered(answer)
    saved = await run_in_threadpool(asked.save, body.question, answer) if asked is not None else {}
    return ConversationAnswer.model_validate(answer.model_dump() | saved)


@router.post("/v1/retrieve", response_model=RetrieveResponse, tags=["native"])
async def retrieve(
    body: RetrieveRequest, principal: PrincipalDep, container: ReadyContainerDep, audit: AuditDep
) -> RetrieveResponse:
    """The chunks the caller may see that best match the query, without generating an answer."""
    started = time.perf_counter()
    chunks = await run_in_threadpool(
        partial(container.retriever.retrieve, identity=principal.identity, filters=body.filters, mode=body.mode),
        body.query,
        body.top_k,
    )
    audit.record(
        question=body.query, retrieved=(str(c.metadata.get("doc_id", "")) for c in chunks), outcome="retrieved"
    )
    return RetrieveResponse(
        query=body.query, chunks=chunks, retrieval_ms=round((time.perf_counter() - started) * 1000, 1)
    )


@router.get("/v1/documents/{doc_id}", response_model=DocumentPreview, tags=["native"])
async def document(
    doc_id: str, principal: PrincipalDep, container: ReadyContainerDep, audit: AuditDep
) -> DocumentPreview:
    """A document's text (preview and download), under the same access check as retrieval; 404 when the caller
    may not see it, exactly as when it does not exist."""
    outcomes = ("document shown", "document refused")
    with audited_fetch(audit, doc_id, outcomes):
        return await run_in_threadpool(preview, container.store, doc_id, principal.identity)


@router.get("/v1/documents/{doc_id}/file", tags=["native"], response_class=FileResponse)
async def document_file(
    doc_id: str, principal: PrincipalDep, container: ReadyContainerDep, audit: AuditDep
) -> FileResponse:
    """The original file, under the same access check as retrieval (404 alike when the caller may not see it)."""
    with audited_fetch(audit, doc_id, ("file sent", "file refused")):
        path = await run_in_threadpool(original_file, container.store, doc_id, principal.identity)
    return FileResponse(path, filename=path.name, headers={"X-Content-Type-Options": "nosniff"})


@contextmanager
def audited_fetch(audit: RouteAudit, doc_id: str, outcomes: tuple[str, str]) -> Iterator[None]:
    """One audit line per document fetch: ``outcomes[0]`` when it is sent, ``outcomes[1]`` with the reason when it is
    refused (404). The caller cannot tell a document that is not there from one that is not theirs to see; the admin
    reading the log can."""
    sent, refused = outcomes
    try:
        yield
    except NotFoundError as exc:
        audit.record(outcome=refused, requested=doc_id, reason=exc.message)
        raise
    audit.record(retrieved=[doc_id], outcome=sent)


@router.get("/metrics", tags=["health"], response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics: requests, latency, time to first token, tokens/s, queue depth, retrieval, ingest."""
    body, content_type = metrics_text(request.app.state)
    return Response(body, media_type=content_type)


@router.get("/healthz", tags=["health"])
async def healthz() -> dict:
    """The process is up and serving HTTP."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"], response_model=None)
async def readyz(container: ContainerDep) -> dict:
    """Ready once the embedder, the store and the LLM are loaded, while the store answers and the generation
    loop runs; 503 with the reason otherwise (a load balancer then sends traffic elsewhere)."""
    if container.load_error is not None:
        raise ModelLoadFailedError(f"model loading failed: {container.load_error}")
    if not container.ready:
        raise ModelNotReadyError("models are still loading")
    try:
        chunks = await run_in_threadpool(container.store.count)
    except Exception as exc:  # noqa: BLE001 - any store failure means not ready, with its reason
        raise StoreUnavailableError(f"the vector store does not answer: {exc}") from exc
    if not container.engine.healthy():
        raise EngineStoppedError("the generation loop is not running: restart the server")
    return {
        "status": "ready",
        "model": container.engine.model_id,
        "model_sha256": container.engine.model_sha256,
        "embedder": container.embedder.model_id,
        "chunks": chunks,
        "generation": container.engine.load_info(),
    }
