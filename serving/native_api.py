"""Native routes: /v1/query (answer + citations + chunks + timings), /v1/retrieve, health and readiness."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from rag.schemas import Answer, RetrievedChunk
from serving.deps import ContainerDep, ready_container
from serving.problems import problem

router = APIRouter()


class QueryRequest(BaseModel):
    question: str = Field(min_length=1, max_length=4000, description="What the employee asks.")
    top_k: int | None = Field(None, ge=1, le=100, description="Chunks to retrieve; default from settings.")
    max_tokens: int | None = Field(None, ge=1, description="Cap on generated tokens.")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    seed: int | None = None


class RetrieveRequest(BaseModel):
    query: str = Field(min_length=1, max_length=4000)
    top_k: int | None = Field(None, ge=1, le=100)


class RetrieveResponse(BaseModel):
    query: str
    chunks: list[RetrievedChunk]
    retrieval_ms: float


@router.post("/v1/query", response_model=Answer, tags=["native"])
async def query(body: QueryRequest, container: ContainerDep) -> Answer:
    ready_container(container)
    service = container.answers
    params = service.params(body.max_tokens, body.temperature, None, body.seed)
    return await run_in_threadpool(service.answer, body.question, top_k=body.top_k, params=params)


@router.post("/v1/retrieve", response_model=RetrieveResponse, tags=["native"])
async def retrieve(body: RetrieveRequest, container: ContainerDep) -> RetrieveResponse:
    ready_container(container)
    started = time.perf_counter()
    chunks = await run_in_threadpool(container.retriever.retrieve, body.query, body.top_k)
    return RetrieveResponse(
        query=body.query, chunks=chunks, retrieval_ms=round((time.perf_counter() - started) * 1000, 1)
    )


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
