"""Saved conversations (/v1/conversations), feedback on answers (/v1/feedback) and its admin view
(/v1/admin/feedback, admins only, whether or not server.admin_api is on).

Every route needs a signed-in user (an API key with a user, an OIDC token or session, a trusted proxy's header):
a conversation belongs to its user, and another user's is a 404 like one that does not exist. A question asked
with ``conversation_id`` (/v1/query, /v1/chat/completions) is checked here before any model work, and its answer
saved here once it is complete (``Asked``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from rag.container import Container
from rag.conversations import ConversationStore, cited_documents, recheck, settings_fingerprint
from rag.documents import visible_record
from rag.errors import AuthenticationError, InvalidRequestError, NotFoundError
from rag.schemas import Answer
from rag.settings import Settings
from serving.auth import AdminDep, Principal, PrincipalDep
from serving.deps import AuditDep, ReadyContainerDep, RouteAudit
from serving.observability import PROCESS

router = APIRouter(tags=["conversations"])
FEEDBACK = Counter("rag_feedback", "Ratings of answers, by rating.", ["rating"], registry=PROCESS)
HISTORY_MESSAGES = 4  # stored messages a /v1/query in a conversation takes as its history when it sends none
OFF = "saved conversations are off on this server (conversations.enabled: false): ask an admin to turn them on"


def install(app: FastAPI, settings: Settings) -> None:
    """The store (swept once now: retention) and the routes; with conversations off the routes say so."""
    store = None
    if settings.conversations.enabled:
        store = ConversationStore.for_settings(settings)
        store.sweep(force=True)
    app.state.conversations = store
    app.include_router(router)


class ConversationAnswer(Answer):
    """/v1/query's answer; asked within a conversation, with the ids it was saved under."""

    conversation_id: str | None = Field(None, description="The conversation the question and answer were added to.")
    message_id: str | None = Field(None, description="The saved answer's message id (for POST /v1/feedback).")


class NewConversation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field("", max_length=200, description="Empty: named after the first question.")

    @field_validator("title")
    @classmethod
    def _plain(cls, value: str) -> str:
        if any(ord(ch) < 32 for ch in value):
            raise ValueError("holds a control character (a line break, a tab): send one line of text")
        return value.strip()


class Rename(NewConversation):
    title: str = Field(min_length=1, max_length=200)

    @field_validator("title")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value:
            raise ValueError("is blank: send a title with some text")
        return value


class Rating(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message_id: str = Field(min_length=1, max_length=100, description="An answer's id in your own conversation.")
    rating: Literal["up", "down"]
    comment: str = Field("", max_length=2000)


def store_of(request: Request) -> ConversationStore:
    store = request.app.state.conversations
    if store is None:
        raise NotFoundError(OFF)
    return store


def owner_of(principal: Principal) -> str:
    if principal.anonymous or not principal.user:
        raise AuthenticationError(
            "saved conversations and feedback need a signed-in user: send an API key "
            "('Authorization: Bearer <key>') or sign in on the web page"
        )
    return principal.user


@dataclass
class Mine:
    """The caller's own conversations."""

    store: ConversationStore
    owner: str


def mine(request: Request, principal: PrincipalDep) -> Mine:
    return Mine(store_of(request), owner_of(principal))


MineDep = Annotated[Mine, Depends(mine)]


def visible_documents(container: Container, doc_ids: set[str], principal: Principal) -> set[str]:
    """The documents the caller may see now, by the document routes' own check (deleted ones are not)."""
    visible = set()
    for doc_id in doc_ids:
        try:
            visible_record(container.store, doc_id, principal.identity)
        except NotFoundError:
            continue
        visible.add(doc_id)
    return visible


def as_seen_now(container: Container, conversation: dict, principal: Principal) -> dict:
    return recheck(conversation, visible_documents(container, cited_documents(conversation), principal))


@router.get("/v1/conversations")
async def list_conversations(me: MineDep) -> dict:
    """Your conversations, most recently updated first."""
    return {"object": "list", "data": await run_in_threadpool(me.store.list, me.owner)}


@router.post("/v1/conversations", status_code=201)
async def create_conversation(me: MineDep, body: NewConversation | None = None) -> dict:
    """A new, empty conversation (past conversations.max_per_user, your least recently updated one goes)."""
    return await run_in_threadpool(me.store.create, me.owner, body.title if body else "")


@router.get("/v1/conversations/{conversation_id}")
async def get_conversation(
    conversation_id: str, me: MineDep, principal: PrincipalDep, container: ReadyContainerDep
) -> dict:
    """The conversation with its messages; citations re-checked against what you may see now."""
    conversation = await run_in_threadpool(me.store.get, me.owner, conversation_id)
    return await run_in_threadpool(as_seen_now, container, conversation, principal)


@router.patch("/v1/conversations/{conversation_id}")
async def rename_conversation(
    conversation_id: str, body: Rename, me: MineDep, principal: PrincipalDep, container: ReadyContainerDep
) -> dict:
    conversation = await run_in_threadpool(me.store.rename, me.owner, conversation_id, body.title)
    return await run_in_threadpool(as_seen_now, container, conversation, principal)


@router.delete("/v1/conversations/{conversation_id}", status_code=204, response_class=Response)
async def delete_conversation(conversation_id: str, me: MineDep, audit: AuditDep) -> Response:
    """Deleted for good: messages and feedback too, overwritten on disk."""
    await run_in_threadpool(me.store.delete, me.owner, conversation_id)
    audit.record(outcome="conversation deleted", conversation=conversation_id)
    return Response(status_code=204)


@router.post("/v1/feedback", status_code=201)
async def rate_answer(body: Rating, me: MineDep, audit: AuditDep) -> dict:
    """Thumbs up or down on an answer in one of your conversations; a second rating replaces the first."""
    rated = await run_in_threadpool(me.store.rate, me.owner, body.message_id, body.rating, body.comment)
    FEEDBACK.labels(body.rating).inc()
    audit.record(outcome="answer rated", message=body.message_id, rating=body.rating)
    return rated


@router.get("/v1/admin/feedback")
async def feedback_view(
    request: Request,
    admin: AdminDep,
    rating: Annotated[Literal["up", "down"] | None, Query(description="Only this rating.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict:
    """Ratings with the rated question and answer, newest first (admins only)."""
    rows = await run_in_threadpool(store_of(request).feedback, rating, None, limit)
    return {"object": "list", "data": rows}


@dataclass
class Asked:
    """A question asked within one of the caller's conversations: saved with its answer once that is complete."""

    store: ConversationStore
    owner: str
    conversation_id: str
    fingerprint: str

    def save(self, question: str, answer: Answer) -> dict:
        saved = answer.model_dump(include={"found", "support", "failed_claims", "repair", "declined"})
        saved |= {
            "content": answer.answer,
            "citations": [c.model_dump() for c in answer.citations],
            "model": answer.model,
            "model_sha256": answer.model_sha256,
            "settings_fingerprint": self.fingerprint,
            "retrieval_query": answer.retrieval_query,
        }
        _, message_id = self.store.append(self.owner, self.conversation_id, question, saved)
        return {"conversation_id": self.conversation_id, "message_id": message_id}

    def history(self, container: Container, principal: Principal) -> list[dict[str, str]]:
        """The last two turns as the caller may see them now (a withheld answer's notice, not its text): they only
        shape the search query of a follow-up (``rag.rewrite``)."""
        shown = as_seen_now(container, self.store.get(self.owner, self.conversation_id), principal)
        return [{"role": m["role"], "content": m["content"][:2000]} for m in shown["messages"][-HISTORY_MESSAGES:]]


def asked_in(request: Request, principal: Principal, audit: RouteAudit, conversation_id: str | None) -> Asked | None:
    """The conversation a question is asked in (None: none), checked before any model work: 404 for one that is
    not the caller's. The audit line then names the conversation and the question's hash, not its text."""
    if conversation_id is None:
        return None
    store = request.app.state.conversations
    if store is None:
        raise InvalidRequestError(f"conversation_id: {OFF}; leave it out", detail={"param": "conversation_id"})
    owner = owner_of(principal)
    store.check_owner(owner, conversation_id)  # NotFoundError (404) unless it is the caller's
    audit.conversation = conversation_id
    return Asked(store, owner, conversation_id, settings_fingerprint(request.app.state.container.settings))
