"""Request dependencies: the process-wide container, and the readiness gate."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from fastapi import Depends, Request

from rag.container import Container
from rag.errors import ModelNotReadyError, PromptTooLongError


def get_container(request: Request) -> Container:
    return request.app.state.container


ContainerDep = Annotated[Container, Depends(get_container)]


def ready_container(container: Container) -> Container:
    if container.load_error is not None:
        raise ModelNotReadyError(f"model loading failed: {container.load_error}; fix the settings and restart")
    if not container.ready:
        raise ModelNotReadyError("the models are still loading: retry in a few seconds")
    return container


def has_capacity(container: Container) -> None:
    """A fast 503 with Retry-After when the generation queue is full, before any retrieval is done."""
    check = getattr(container.engine, "check_capacity", None)
    if callable(check):
        check()


def check_prompt_size(container: Container, texts: Iterable[str]) -> None:
    """The caller's own text (question, history, messages) within server.max_prompt_tokens, in the model's tokens."""
    limit = container.settings.server.max_prompt_tokens
    used = container.engine.count_tokens("\n".join(texts))
    if used > limit:
        raise PromptTooLongError(
            f"the messages are {used} tokens; this server accepts at most {limit} (server.max_prompt_tokens): "
            "shorten the question or send less history",
            detail={"param": "messages", "limit": limit},
        )
