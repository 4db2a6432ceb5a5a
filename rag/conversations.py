"""Saved conversations and the feedback on their answers, in one SQLite file per data dir
(``data_dir/conversations/conversations.sqlite3``, owner-only, WAL; several server processes may share it).

A conversation belongs to one user: every read and write names the owner, and another user's conversation is
not found, exactly like one that does not exist. Answers are kept as the API returned them (citations, support,
model id and sha256, settings fingerprint, retrieval query), and re-checked against the reader's access when they
are shown again (``recheck``). Deleting is for real: ``secure_delete`` overwrites the rows, and the write-ahead
log, which keeps earlier page images, is truncated after every delete. Retention (``conversations``
settings): conversations not updated for ``retention_days`` are deleted by a sweep at start and at most hourly
after; past ``max_per_user`` a user's least recently updated conversation goes.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import sqlite3
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rag.errors import NotFoundError
from rag.settings import Settings
from rag.sqlite_file import SQLiteFile

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, title TEXT NOT NULL, created TEXT NOT NULL, updated TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS conversations_by_owner ON conversations (owner, updated);
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY, conversation_id TEXT NOT NULL, seq INTEGER NOT NULL, role TEXT NOT NULL,
    content TEXT NOT NULL, created TEXT NOT NULL, answer TEXT);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation_id, seq);
CREATE TABLE IF NOT EXISTS feedback (
    id TEXT PRIMARY KEY, message_id TEXT NOT NULL, conversation_id TEXT NOT NULL, user TEXT NOT NULL,
    rating TEXT NOT NULL, comment TEXT NOT NULL, created TEXT NOT NULL, question TEXT NOT NULL,
    answer TEXT NOT NULL, details TEXT NOT NULL, UNIQUE (message_id, user));
CREATE INDEX IF NOT EXISTS feedback_by_conversation ON feedback (conversation_id);
"""

# What an answer message keeps besides its text: the fields the API returned with it.
ANSWER_FIELDS = (
    "citations",
    "found",
    "support",
    "failed_claims",
    "repair",
    "declined",
    "model",
    "model_sha256",
    "settings_fingerprint",
    "retrieval_query",
)
# The settings sections that change what an answer says; server, auth and paths do not.
ANSWERING_SECTIONS = ("collection", "embedding", "llm", "chunking", "retrieval", "prompt")
WITHHELD = "This answer cited documents you can no longer see, so it is not shown."
UNTITLED_LENGTH = 80  # an untitled conversation is named after the start of its first question


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def new_id(prefix: str) -> str:
    """Random and unguessable (144 bits): knowing one id tells nothing about another."""
    return prefix + secrets.token_urlsafe(18)


def settings_fingerprint(settings: Settings) -> str:
    """A short hash of the settings that shape an answer (models, chunking, retrieval, prompt)."""
    shaping = settings.model_dump(mode="json", include=set(ANSWERING_SECTIONS))
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]


class ConversationStore(SQLiteFile):
    """Conversations, their messages and the feedback on them, per owner."""

    sweep_every_s = 3600.0

    def __init__(self, path: Path, retention_days: float = 0, max_per_user: int = 1000) -> None:
        super().__init__(path)
        self.retention_days = retention_days
        self.max_per_user = max_per_user
        self._swept = -math.inf

    @classmethod
    def for_settings(cls, settings: Settings) -> ConversationStore:
        section = settings.conversations
        path = settings.data_dir / "conversations" / "conversations.sqlite3"
        return cls(path, section.retention_days, section.max_per_user)

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        conn.executescript(SCHEMA)

    # -- conversations ------------------------------------------------------------------------------------------

    def create(self, owner: str, title: str = "") -> dict:
        self.sweep()
        stamp, cid = now(), new_id("conv_")
        with self._transaction() as conn:
            conn.execute("INSERT INTO conversations VALUES (?, ?, ?, ?, ?)", (cid, owner, title, stamp, stamp))
            over = conn.execute(
                "SELECT id FROM conversations WHERE owner = ? ORDER BY updated DESC, created DESC LIMIT -1 OFFSET ?",
                (owner, self.max_per_user),
            ).fetchall()
            _delete(conn, [row[0] for row in over])
        if over:
            self.truncate_log()
        return {"id": cid, "title": title, "created": stamp, "updated": stamp, "message_count": 0}

    def list(self, owner: str) -> list[dict]:
        """The owner's conversations, most recently updated first, each with its number of messages."""
        self.sweep()
        rows = self._read(
            "SELECT c.id, c.title, c.created, c.updated, COUNT(m.id) FROM conversations c "
            "LEFT JOIN messages m ON m.conversation_id = c.id WHERE c.owner = ? "
            "GROUP BY c.id ORDER BY c.updated DESC, c.created DESC",
            (owner,),
        )
        keys = ("id", "title", "created", "updated", "message_count")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def get(self, owner: str, cid: str) -> dict:
        """The conversation with its messages in order; NotFoundError for one that is not the owner's."""
        self.sweep()
        found = self._read(
            "SELECT id, title, created, updated FROM conversations WHERE id = ? AND owner = ?", (cid, owner)
        )
        if not found:
            raise _missing(cid)
        conversation = dict(zip(("id", "title", "created", "updated"), found[0], strict=True))
        rows = self._read(
            "SELECT id, role, content, created, answer FROM messages WHERE conversation_id = ? ORDER BY seq", (cid,)
        )
        rated = dict(
            self._read("SELECT message_id, rating FROM feedback WHERE conversation_id = ? AND user = ?", (cid, owner))
        )
        conversation["messages"] = [_message(*row, rated) for row in rows]
        return conversation

    def check_owner(self, owner: str, cid: str) -> None:
        """NotFoundError unless ``cid`` is one of the owner's conversations."""
        with self._reader() as conn:
            _owned(conn, owner, cid)

    def rename(self, owner: str, cid: str, title: str) -> dict:
        with self._transaction() as conn:
            changed = conn.execute(
                "UPDATE conversations SET title = ?, updated = ? WHERE id = ? AND owner = ?", (title, now(), cid, owner)
            ).rowcount
        if not changed:
            raise _missing(cid)
        return self.get(owner, cid)

    def delete(self, owner: str, cid: str) -> None:
        """Delete the conversation, its messages and its feedback, and truncate the log that held their pages."""
        with self._transaction() as conn:
            _owned(conn, owner, cid)
            _delete(conn, [cid])
        self.truncate_log()

    def append(self, owner: str, cid: str, question: str, answer: dict) -> tuple[str, str]:
        """Add a question and its answer (``answer``: text under ``content``, the ``ANSWER_FIELDS``); the ids of
        both messages. An untitled conversation is named after its first question."""
        stamp = now()
        ids = new_id("msg_"), new_id("msg_")
        details = json.dumps({k: answer.get(k) for k in ANSWER_FIELDS}, ensure_ascii=False)
        with self._transaction() as conn:
            found = _owned(conn, owner, cid)
            seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM messages WHERE conversation_id = ?", (cid,))
            last = seq.fetchone()[0]
            rows = [
                (ids[0], cid, last + 1, "user", question, stamp, None),
                (ids[1], cid, last + 2, "assistant", answer["content"], stamp, details),
            ]
            conn.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            title = found[0] or " ".join(question.split())[:UNTITLED_LENGTH]
            conn.execute("UPDATE conversations SET updated = ?, title = ? WHERE id = ?", (stamp, title, cid))
        return ids

    # -- feedback -----------------------------------------------------------------------------------------------

    def rate(self, user: str, message_id: str, rating: str, comment: str = "") -> dict:
        """One rating per answer and user (a new one replaces it), on an answer in one of the user's own
        conversations; the question, answer, citations, model and settings are copied from the stored messages."""
        with self._transaction() as conn:
            found = conn.execute(
                "SELECT m.conversation_id, m.seq, m.content, m.answer FROM messages m JOIN conversations c "
                "ON c.id = m.conversation_id WHERE m.id = ? AND c.owner = ? AND m.role = 'assistant'",
                (message_id, user),
            ).fetchone()
            if found is None:
                raise NotFoundError(
                    f"no answer {message_id} in your conversations: rate an assistant message of your own "
                    "(its message_id)",
                    detail={"param": "message_id"},
                )
            cid, seq, content, details = found
            asked = conn.execute(
                "SELECT content FROM messages WHERE conversation_id = ? AND seq < ? AND role = 'user' "
                "ORDER BY seq DESC LIMIT 1",
                (cid, seq),
            ).fetchone()
            stamp, fid = now(), new_id("fb_")
            fid = conn.execute(
                "INSERT INTO feedback VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (message_id, user) DO UPDATE "
                "SET rating = excluded.rating, comment = excluded.comment, created = excluded.created RETURNING id",
                (fid, message_id, cid, user, rating, comment, stamp, asked[0] if asked else "", content, details),
            ).fetchone()[0]
        return {"id": fid, "message_id": message_id, "rating": rating, "comment": comment, "created": stamp}

    def feedback(self, rating: str | None = None, since: str | None = None, limit: int | None = None) -> list[dict]:
        """Feedback, newest first: each with the rated question and answer as they were stored."""
        where, params = ["1 = 1"], []
        if rating:
            where.append("rating = ?")
            params.append(rating)
        if since:
            where.append("created >= ?")
            params.append(since)
        rows = self._read(
            "SELECT id, message_id, conversation_id, user, rating, comment, created, question, answer, details "
            f"FROM feedback WHERE {' AND '.join(where)} ORDER BY created DESC, id LIMIT ?",
            (*params, -1 if limit is None else limit),
        )
        keys = ("id", "message_id", "conversation_id", "user", "rating", "comment", "created", "question", "answer")
        return [dict(zip(keys, row[:-1], strict=True)) | json.loads(row[-1] or "{}") for row in rows]

    # -- retention ----------------------------------------------------------------------------------------------

    def sweep(self, force: bool = False) -> int:
        """Delete conversations not updated for ``retention_days`` (at most once per ``sweep_every_s`` unless
        forced); how many went."""
        if not self.retention_days or (not force and time.monotonic() - self._swept < self.sweep_every_s):
            return 0
        self._swept = time.monotonic()
        cutoff = (datetime.now(UTC) - timedelta(days=self.retention_days)).isoformat(timespec="microseconds")
        with self._transaction() as conn:
            old = [row[0] for row in conn.execute("SELECT id FROM conversations WHERE updated < ?", (cutoff,))]
            _delete(conn, old)
        if old:
            self.truncate_log()
        return len(old)

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows from a pooled read-only connection (``SQLiteFile._reader``): reads do not wait on each other or on
        the writer's lock."""
        try:
            with self._reader() as conn:
                return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            raise self._fault(exc) from exc


def _delete(conn: sqlite3.Connection, ids: list[str]) -> None:
    for cid in ids:
        conn.execute("DELETE FROM feedback WHERE conversation_id = ?", (cid,))
        conn.execute("DELETE FROM messages WHERE conversation_id = ?", (cid,))
        conn.execute("DELETE FROM conversations WHERE id = ?", (cid,))


def _message(mid: str, role: str, content: str, created: str, details: str | None, rated: dict[str, str]) -> dict:
    """A stored message; an answer with its fields and the owner's rating of it (up, down or null)."""
    message = {"id": mid, "role": role, "content": content, "created": created}
    return message | json.loads(details) | {"rating": rated.get(mid)} if details else message


def _owned(conn: sqlite3.Connection, owner: str, cid: str) -> tuple[str]:
    """(title,) of the owner's conversation ``cid``; NotFoundError for one that is missing or another user's."""
    found = conn.execute("SELECT title FROM conversations WHERE id = ? AND owner = ?", (cid, owner)).fetchone()
    if found is None:
        raise _missing(cid)
    return found


def _missing(cid: str) -> NotFoundError:
    return NotFoundError(
        f"no conversation {cid} of yours: list yours with GET /v1/conversations", detail={"param": "conversation_id"}
    )


def cited_documents(conversation: dict) -> set[str]:
    return {c["document_id"] for m in conversation["messages"] for c in m.get("citations") or () if "document_id" in c}


def recheck(conversation: dict, visible: Iterable[str]) -> dict:
    """The conversation as its reader may see it now: a citation of a document outside ``visible`` keeps only its
    index (``available: false``), and an answer citing one is withheld (its text may quote the document)."""
    visible = set(visible)
    messages = []
    for message in conversation["messages"]:
        if message["role"] != "assistant":
            messages.append(message)
            continue
        citations = [
            {**c, "available": True}
            if c.get("document_id") in visible
            else {"index": c.get("index"), "available": False, "note": "no longer available"}
            for c in message.get("citations") or ()
        ]
        withheld = not all(c["available"] for c in citations)
        shown = {**message, "citations": citations, "withheld": withheld}
        if withheld:  # the text, the claims and the rewritten query may all quote the documents
            shown |= {"content": WITHHELD, "failed_claims": [], "retrieval_query": ""}
        messages.append(shown)
    return {**conversation, "messages": messages}
