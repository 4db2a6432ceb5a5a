"""Request dependencies: the process-wide container, and the readiness gate in front of it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message
from typing import Annotated, Any

from fastapi import Depends, Request

from rag.container import Container
from rag.errors import InvalidRequestError, ModelNotReadyError, PromptTooLongError
from rag.schemas import Answer
from serving.auth import Principal, PrincipalDep
from serving.observability import AuditLog, finish_answer, in_conversation


def get_container(request: Request) -> Container:
    return request.app.state.container


ContainerDep = Annotated[Container, Depends(get_container)]


def ready_container(container: Container) -> Container:
    if container.load_error is not None:
        raise ModelNotReadyError(f"model loading failed: {container.load_error}; fix the settings and restart")
    if not container.ready:
        raise ModelNotReadyError("the models are still loading: retry in a few seconds")
    return container


def get_ready_container(container: ContainerDep) -> Container:
    """The container once its models are loaded: routes that need the models take this, and get the 503 for free."""
    return ready_container(container)


ReadyContainerDep = Annotated[Container, Depends(get_ready_container)]


@dataclass
class RouteAudit:
    """The audit log bound to one request's caller and route, so a route says what happened and nothing else."""

    log: AuditLog | None
    principal: Principal
    route: str
    conversation: str | None = None  # asked in a saved conversation: its lines hold the question's hash, not text

    def answered(self, answer: Answer) -> None:
        """Metrics and the audit line for an answered question."""
        finish_answer(self.log, self.principal, self.route, answer, conversation=self.conversation)

    def record(self, **entry: Any) -> None:  # noqa: ANN401 - AuditLog.record's fields
        if self.log is not None:
            entry = in_conversation(entry, self.conversation)
            self.log.record(principal=self.principal, route=self.route, **entry)


def get_audit(request: Request, principal: PrincipalDep) -> RouteAudit:
    # The route's template ("/v1/documents/{doc_id}"), not the path asked for: one name per route in the log.
    return RouteAudit(request.app.state.audit, principal, request.scope["route"].path)


AuditDep = Annotated[RouteAudit, Depends(get_audit)]


def has_capacity(container: Container) -> None:
    """A fast 503 with Retry-After when the generation queue is full, before any retrieval is done."""
    container.engine.check_capacity()


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


async def valid_unicode(request: Request) -> None:
    """400 for a JSON body that holds a lone UTF-16 surrogate (``"\\ud800"``): JSON allows the escape, Python
    parses it into a string that cannot be encoded, and every later step (tokenizer, store, audit log, response)
    would fail on it with a 500. Runs on every route, before the body reaches a model; other bodies pass."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    content_type = request.headers.get("content-type")
    if content_type:  # FastAPI reads a body without a content type as JSON too
        message = Message()
        message["content-type"] = content_type
        subtype = message.get_content_subtype()
        if message.get_content_maintype() != "application" or not (subtype == "json" or subtype.endswith("+json")):
            return  # uploads and forms: not read here (they can be large)
    try:
        body = await request.json()  # cached: FastAPI's own parse returns this same object
    except ValueError:
        return  # not JSON: the route's own validation says so
    where = _lone_surrogate(body)
    if where is not None:
        raise InvalidRequestError(
            f"{where or 'the body'}: holds a lone surrogate escape (such as \\ud800), which is no Unicode "
            "character: send valid text (a character above U+FFFF as a high and a low surrogate together)",
            detail={"param": where or None},
        )


def _lone_surrogate(value: Any) -> str | None:
    """The path (``messages.0.content``) of a key or string in a parsed JSON value that is not valid Unicode (''
    for the value itself), or None when there is none."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if not _encodable(item):
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                name = key if _encodable(key) else key.encode("utf-8", "backslashreplace").decode()
                where = f"{path}.{name}" if path else name
                if name is not key:
                    return where
                stack.append((where, child))
        elif isinstance(item, list):
            stack.extend((f"{path}.{i}" if path else str(i), child) for i, child in enumerate(item))
    return None


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
