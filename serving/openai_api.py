"""OpenAI-compatible routes: /v1/chat/completions (stream and non-stream) and /v1/models."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from functools import partial
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from starlette.concurrency import run_in_threadpool

from rag.answering import Generating, TextDelta, final_answer
from rag.container import Container
from rag.errors import InvalidRequestError
from rag.schemas import Answer, Seed
from serving.auth import Principal, PrincipalDep
from serving.conversations_api import asked_in
from serving.deps import AuditDep, ContainerDep, ReadyContainerDep, check_prompt_size, has_capacity
from serving.openai_responses import Completion

router = APIRouter(prefix="/v1", tags=["openai"])


class ChatMessage(BaseModel):
    # OpenAI's message fields are accepted (a client replays its history as it got it); anything else is refused.
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict] | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[dict] | None = None
    tool_call_id: str | None = None
    function_call: dict | None = None
    audio: dict | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return " ".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        return self.content or ""


# OpenAI request fields this server cannot honour, with the values that ask for nothing (what a client that does
# not use the feature sends): any other value is refused with a 400 that names the field, never silently ignored.
NOT_SUPPORTED: dict[str, tuple[tuple[object, ...], str]] = {
    "n": ((None, 1), "this server returns one choice per request: send n 1 or leave it out"),
    "logprobs": ((None, False), "log probabilities are not returned: leave logprobs out"),
    "top_logprobs": ((None, 0), "log probabilities are not returned: leave top_logprobs out"),
    "tools": ((None, []), "tool calls are not supported: leave tools out"),
    "tool_choice": ((None, "none", "auto"), "tool calls are not supported: leave tool_choice out"),
    "functions": ((None, []), "function calls are not supported: leave functions out"),
    "function_call": ((None, "none", "auto"), "function calls are not supported: leave function_call out"),
    "response_format": ((None, {"type": "text"}), "only text answers: leave response_format out"),
    "modalities": ((None, ["text"]), "only text answers: leave modalities out"),
    "audio": ((None,), "audio output is not supported: leave audio out"),
    "frequency_penalty": ((None, 0, 0.0), "penalties are not supported: leave frequency_penalty out or send 0"),
    "presence_penalty": ((None, 0, 0.0), "penalties are not supported: leave presence_penalty out or send 0"),
    "logit_bias": ((None, {}), "logit_bias is not supported: leave it out"),
    "web_search_options": ((None,), "web search is not available here (nothing leaves the machine)"),
}


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat request. Fields OpenAI defines are accepted; those that change nothing here (metadata, store,
    service tier, cache and safety ids, hints for reasoning models) are ignored, those asking for something this
    server cannot do are refused unless they ask for nothing (``NOT_SUPPORTED``), and any other field is a 400."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: Seed | None = None
    stop: str | list[str] | None = Field(None, description="Up to 4 sequences; the answer ends before the first.")
    user: str | None = None
    rag: bool = Field(
        True,
        description=(
            "false (or a model id ending in ':no-rag'): the model alone on these messages, with no retrieval, no "
            "document text and no citations; e.g. for an evaluation judge."
        ),
    )
    conversation_id: str | None = Field(
        None,
        max_length=100,
        description="Save the last user message and the answer in this conversation of yours (the reply, or the "
        "last chunk, carries conversation_id and message_id).",
    )
    stream_options: dict | None = Field(None, description="Accepted; usage always comes in the last chunk.")
    metadata: dict | None = Field(None, description="Accepted and ignored.")
    store: bool | None = Field(None, description="Accepted and ignored: nothing is stored beyond the audit log.")
    service_tier: str | None = Field(None, description="Accepted and ignored.")
    parallel_tool_calls: bool | None = Field(None, description="Accepted and ignored (no tools).")
    prompt_cache_key: str | None = Field(None, description="Accepted and ignored.")
    safety_identifier: str | None = Field(None, description="Accepted and ignored.")
    reasoning_effort: str | None = Field(None, description="Accepted and ignored.")
    verbosity: str | None = Field(None, description="Accepted and ignored.")
    prediction: dict | None = Field(None, description="Accepted and ignored.")
    n: int | None = Field(None, description="Only 1.")
    logprobs: bool | None = Field(None, description="Only false.")
    top_logprobs: int | None = Field(None, description="Only 0.")
    tools: list[dict] | None = Field(None, description="Only empty.")
    tool_choice: str | dict | None = Field(None, description="Only none or auto.")
    functions: list[dict] | None = Field(None, description="Only empty.")
    function_call: str | dict | None = Field(None, description="Only none or auto.")
    response_format: dict | None = Field(None, description='Only {"type": "text"}.')
    modalities: list[str] | None = Field(None, description='Only ["text"].')
    audio: dict | None = Field(None, description="Not supported.")
    frequency_penalty: float | None = Field(None, description="Only 0.")
    presence_penalty: float | None = Field(None, description="Only 0.")
    logit_bias: dict | None = Field(None, description="Only empty.")
    web_search_options: dict | None = Field(None, description="Not supported.")

    @field_validator(*NOT_SUPPORTED)
    @classmethod
    def _asks_for_nothing(cls, value: object, info: ValidationInfo) -> object:
        allowed, fix = NOT_SUPPORTED[info.field_name]
        if value not in allowed:
            raise ValueError(f"{json.dumps(value)} is not supported: {fix}")
        return value


def question_of(request: ChatCompletionRequest) -> str:
    for message in reversed(request.messages):
        if message.role == "user" and message.text().strip():
            return message.text()
    raise InvalidRequestError("no user message with text: add a message with role 'user'")


def history_of(request: ChatCompletionRequest) -> list[dict[str, str]]:
    """The user and assistant turns before the last user message: the chat a follow-up refers to."""
    last = max(i for i, m in enumerate(request.messages) if m.role == "user" and m.text().strip())
    return [{"role": m.role, "content": m.text()} for m in request.messages[:last] if m.role in ("user", "assistant")]


NO_RAG = ":no-rag"  # model id suffix: the model alone, for clients that cannot send the `rag` field


@router.get("/models")
async def list_models(container: ContainerDep, principal: PrincipalDep) -> dict:
    """The RAG assistant, then the same model without retrieval (``<id>:no-rag``), e.g. for an eval judge."""
    model = {"object": "model", "created": 0, "owned_by": "local", "sha256": container.engine.model_sha256}
    return {
        "object": "list",
        "data": [
            {**model, "id": container.engine.model_id, "rag": True},
            {**model, "id": container.engine.model_id + NO_RAG, "rag": False},
        ],
    }


@router.post("/chat/completions")
async def chat_completions(  # noqa: ANN201
    body: ChatCompletionRequest,
    request: Request,
    principal: PrincipalDep,
    container: ReadyContainerDep,
    audit: AuditDep,
):
    asked = await run_in_threadpool(asked_in, request, principal, audit, body.conversation_id)
    check_prompt_size(container, (m.text() for m in body.messages))
    has_capacity(container)
    cancel = threading.Event()
    stream = _answer_stream(body, container, principal, cancel)
    completion = Completion(container.engine.model_id)
    save = partial(asked.save, question_of(body)) if asked is not None else None
    if not body.stream:
        answer = await run_in_threadpool(final_answer, stream)
        audit.answered(answer)
        return completion.to_response(answer) | (await run_in_threadpool(save, answer) if save else {})
    # Retrieval errors (bad question, store down) surface here as a proper status, not a broken stream.
    first = await run_in_threadpool(next, stream)
    return completion.streaming_response(_prepend(first, stream), request, audit, cancel, _asked(body), save)


def _answer_stream(
    body: ChatCompletionRequest, container: Container, principal: Principal, cancel: threading.Event
) -> Iterator[TextDelta | Generating | Answer]:
    """With retrieval for the caller, or the model alone on the messages (``rag: false`` or a ``:no-rag`` model)."""
    service = container.answers
    params = service.params(
        body.max_completion_tokens or body.max_tokens, body.temperature, body.top_p, body.seed, body.stop
    )
    if body.rag and not (body.model or "").endswith(NO_RAG):
        return service.stream(
            question_of(body), params=params, cancel=cancel, history=history_of(body), identity=principal.identity
        )
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    return service.stream_plain(messages, params=params, cancel=cancel)


def _prepend(first, rest):  # noqa: ANN001, ANN202
    yield first
    yield from rest


def _asked(body: ChatCompletionRequest) -> str:
    return next((m.text() for m in reversed(body.messages) if m.role == "user"), "")
