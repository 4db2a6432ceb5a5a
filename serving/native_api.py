"""Native routes: /v1/query (answer + citations + chunks + timings), /v1/retrieve, health and readiness."""

from __future__ import annotations

import time
from functools import partial
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from rag.documents import DocumentPreview, preview
from rag.schemas import Answer, RetrievedChunk, SearchFilters
from serving.deps import ContainerDep, ready_container
from serving.problems import problem

router = APIRouter()


class ChatTurn(BaseModel):
    role: Literal["user", "assistant"]
    content: str = Field(max_length=8000)


class QueryRequest(BaseModel):
    question: str = Field(min_length=1, max_length=4000, description="What the employee asks.")
    top_k: int | None = Field(None, ge=1, le=100, description="Chunks to retrieve; default from settings.")
    max_tokens: int | None = Field(None, ge=1, description="Cap on generated tokens.")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    seed: int | None = None
    filters: SearchFilters | None = Field(None, description="Only search documents that match these.")
    history: list[ChatTurn] = Field(
        default_factory=list,
        max_length=50,
        description="Earlier turns of the chat; a follow-up question is rewritten into a standalone query.",
    )


class RetrieveRequest(BaseModel):
    query: str = Field(min_length=1, max_length=4000)
    top_k: int | None = Field(None, ge=1, le=100)
    filters: SearchFilters | None = Field(None, description="Only search documents that match these.")
    mode: Literal["hybrid", "dense", "keyword"] | None = Field(None, description="Default from settings.")


class RetrieveResponse(BaseModel):
    query: str
    chunks: list[RetrievedChunk]
    retrieval_ms: float


@router.post("/v1/query", response_model=Answer, tags=["native"])
async def query(body: QueryRequest, container: ContainerDep) -> Answer:
    ready_container(container)
    service = container.answers
    params = service.params(body.max_tokens, body.temperature, None, body.seed)
    # No identity until the serving layer authenticates callers: public documents only (fail closed).
    return await run_in_threadpool(
        partial(
            service.answer,
            top_k=body.top_k,
            params=params,
            identity=None,
            filters=body.filters,
            history=[t.model_dump() for t in body.history],
        ),
        body.question,
    )


@router.post("/v1/retrieve", response_model=RetrieveResponse, tags=["native"])
async def retrieve(body: RetrieveRequest, container: ContainerDep) -> RetrieveResponse:
    ready_container(container)
    started = time.perf_counter()
    chunks = await run_in_threadpool(
        partial(container.retriever.retrieve, identity=None, filters=body.filters, mode=body.mode),
        body.query,
        body.top_k,
    )
    return RetrieveResponse(
        query=body.query, chunks=chunks, retrieval_ms=round((time.perf_counter() - started) * 1000, 1)
    )


@router.get("/v1/documents/{doc_id}", response_model=DocumentPreview, tags=["native"])
async def document(doc_id: str, container: ContainerDep) -> DocumentPreview:
    """A document's text (preview and download), under the same access check as retrieval; 404 when the caller
    may not see it, exactly as when it does not exist. Callers are anonymous until auth exists."""
    ready_container(container)
    return await run_in_threadpool(preview, container.store, doc_id, None)


@router.get("/healthz", tags=["health"])
async def healthz() -> dict:
    """The process is up and serving HTTP."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"], response_model=None)
async def readyz(container: ContainerDep) -> dict | JSONResponse:
    """Ready once the embedder, the store and the LLM are loaded."""
    if container.load_error is not None:
        return problem(503, "model_load_failed", "Not ready", f"model loading failed: {container.load_error}")
    if not container.ready:
        return problem(503, "model_not_ready", "Not ready", "models are still loading", headers={"Retry-After": "5"})
    return {
        "status": "ready",
        "model": container.engine.model_id,
        "model_sha256": container.engine.model_sha256,
        "embedder": container.embedder.model_id,
        "chunks": container.store.count(),
    }
