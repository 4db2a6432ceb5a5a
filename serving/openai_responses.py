"""OpenAI's chat completion shapes: the whole response, and the stream of `chat.completion.chunk` events (SSE)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from rag.answering import Generating, TextDelta
from rag.schemas import Answer
from serving.deps import RouteAudit
from serving.observability import stream_failed
from serving.problems import stream_problem

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def usage_of(answer: Answer) -> dict:
    return {
        "prompt_tokens": answer.usage.prompt_tokens,
        "completion_tokens": answer.usage.completion_tokens,
        "total_tokens": answer.usage.total_tokens,
    }


def extras_of(answer: Answer) -> dict:
    """What this server adds to OpenAI's fields: citations, support, timings (clients that do not know them ignore
    them)."""
    return {
        "citations": [c.model_dump() for c in answer.citations],
        "found": answer.found,
        "support": answer.support,
        "failed_claims": answer.failed_claims,
        "repair": answer.repair,
        "declined": answer.declined,
        "model_sha256": answer.model_sha256,
        "timings": answer.timings.model_dump(),
        "retrieval_query": answer.retrieval_query,
    }


@dataclass
class Completion:
    """One chat completion: the id, time and model that its response, or each of its chunks, carries."""

    model: str
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    def to_response(self, answer: Answer) -> dict:
        """The non-streamed `chat.completion`."""
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer.answer}}
            ],
            "usage": usage_of(answer),
            **extras_of(answer),
        }

    def to_sse(self, delta: dict, finish: str | None = None, **extra: object) -> str:
        """One `chat.completion.chunk`, framed as a server-sent event."""
        payload = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(payload)}\n\n"

    def streaming_response(
        self,
        events: Iterator[TextDelta | Generating | Answer],
        request: Request,
        audit: RouteAudit,
        cancel: threading.Event,
        asked: str,
        save: Callable[[Answer], dict] | None = None,
    ) -> StreamingResponse:
        """The answer stream as SSE; ``asked`` is the question for the audit line when no answer comes; ``save``
        keeps a complete answer (in a conversation) and gives the fields the last chunk adds."""
        return StreamingResponse(
            self._sse(events, request, audit, cancel, asked, save), media_type="text/event-stream", headers=SSE_HEADERS
        )

    async def _sse(
        self,
        events: Iterator[TextDelta | Generating | Answer],
        request: Request,
        audit: RouteAudit,
        cancel: threading.Event,
        asked: str,
        save: Callable[[Answer], dict] | None = None,
    ) -> AsyncIterator[str]:
        outcome = "client disconnected"
        try:
            yield self.to_sse({"role": "assistant", "content": ""})
            try:
                async for event in iterate_in_threadpool(events):
                    if await request.is_disconnected():
                        break
                    if isinstance(event, TextDelta):
                        yield self.to_sse({"content": event.text})
                    elif isinstance(event, Answer):
                        outcome = "answered"
                        audit.answered(event)
                        saved = await run_in_threadpool(save, event) if save else {}
                        yield self.to_sse({}, "stop", usage=usage_of(event), **extras_of(event), **saved)
            except Exception as exc:  # noqa: BLE001 - the 200 is sent: the error becomes the last event, then [DONE]
                problem = stream_problem(exc)
                outcome = f"failed: {problem['code']}"
                stream_failed(request, problem["status"], problem["code"])
                yield f"data: {json.dumps(problem)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            cancel.set()  # a client that went away stops the generation and frees the model
            if outcome != "answered":
                audit.record(question=asked, outcome=outcome)
