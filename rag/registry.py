"""The document registry: which documents the store holds, who may see each, and the counters that tell other
processes (and caches) that something changed. It lives in the SQLite file beside the vector store, with the chunk
texts (``rag.keyword_index``).

The ``documents`` table is the ingest registry: one row per document with its path, the content hash of the
indexed version, a version counter, ACL groups and a status:

- ``indexing``: chunks are being written; a crash leaves this, and the next run redoes the document;
- ``indexed``: every chunk of ``content_hash`` is in the store;
- ``failed``: the file never made it in (``error`` says why);
- ``deleting``: removal started; the next run finishes it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rag.change_log import VectorChangeLog
from rag.schemas import SearchFilters

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id       TEXT PRIMARY KEY,
    path         TEXT NOT NULL,
    title        TEXT NOT NULL DEFAULT '',
    doc_type     TEXT NOT NULL DEFAULT '',
    content_hash TEXT,
    size_bytes   INTEGER NOT NULL DEFAULT 0,
    version      INTEGER NOT NULL DEFAULT 0,
    chunk_count  INTEGER NOT NULL DEFAULT 0,
    acl_groups   TEXT NOT NULL DEFAULT '[]',  -- ACL tokens (public, group:x, user:y), as JSON
    tags         TEXT NOT NULL DEFAULT '[]',  -- labels for search filters, as JSON
    status       TEXT NOT NULL,
    error        TEXT,
    ingested_at  TEXT,
    updated_at   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_path ON documents(path);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS doc_acl (
    doc_id TEXT NOT NULL,
    token  TEXT NOT NULL,
    PRIMARY KEY (token, doc_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS doc_acl_doc ON doc_acl(doc_id);
"""

STATUSES = ("indexing", "indexed", "failed", "deleting")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class DocumentRecord:
    doc_id: str
    path: str
    status: str
    title: str = ""
    doc_type: str = ""
    content_hash: str | None = None
    size_bytes: int = 0
    version: int = 0
    chunk_count: int = 0
    acl: list[str] = field(default_factory=list)  # ACL tokens: public, group:NAME, user:NAME
    tags: list[str] = field(default_factory=list)
    error: str | None = None
    ingested_at: str | None = None
    updated_at: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a registry written by an earlier version up to date: tags and ACL tokens."""
    from rag.acl import legacy_tokens

    if "tags" not in {row[1] for row in conn.execute("PRAGMA table_info(documents)")}:
        conn.execute("ALTER TABLE documents ADD COLUMN tags TEXT NOT NULL DEFAULT '[]'")
    if conn.execute("SELECT 1 FROM doc_acl LIMIT 1").fetchone() is None:
        rows = conn.execute("SELECT doc_id, acl_groups FROM documents WHERE content_hash IS NOT NULL").fetchall()
        for doc_id, stored in rows:
            tokens = legacy_tokens(json.loads(stored or "[]"))
            conn.execute("UPDATE documents SET acl_groups = ? WHERE doc_id = ?", (json.dumps(tokens), doc_id))
            conn.executemany("INSERT OR IGNORE INTO doc_acl(doc_id, token) VALUES(?, ?)", [(doc_id, t) for t in tokens])


class DocumentRegistry(VectorChangeLog):
    """Documents, their ACL tokens and the store's counters. Searches read through the pooled read-only
    connections (``SQLiteFile``), the registry's own reads through the write connection."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        # Bumped by every write that can change who sees what; caches of access decisions key on it.
        self._access_counter = 0
        # Set when other processes write to this registry too (Chroma server mode): then any commit anywhere
        # counts as a possible change of access.
        self.shared = False

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        conn.executescript(SCHEMA)
        _migrate(conn)
        super()._create_schema(conn)  # the change log, after the meta table it keeps its bounds in

    # -- meta -------------------------------------------------------------------------------------------------

    @property
    def access_generation(self) -> tuple[int, int]:
        """Changes whenever who may see what could have changed: this process's ACL writes, and, when the
        registry is shared, any commit by any process (SQLite's data_version)."""
        if not self.shared:
            return self._access_counter, 0
        with self._lock:
            if self._watch is None:
                self.conn  # noqa: B018 - creates the file (and its folder) first: a fresh data dir has neither
                self._watch = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            version = self._watch.execute("PRAGMA data_version").fetchone()[0]
        return self._access_counter, version

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._write(
            "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- documents --------------------------------------------------------------------------------------------

    @staticmethod
    def _record(row: sqlite3.Row | tuple, names: list[str]) -> DocumentRecord:
        values = dict(zip(names, row, strict=True))
        values["acl"] = json.loads(values.pop("acl_groups") or "[]")
        values["tags"] = json.loads(values.get("tags") or "[]")
        return DocumentRecord(**values)

    def _select(self, where: str = "", params: Sequence = ()) -> list[DocumentRecord]:
        with self._lock:
            cursor = self.conn.execute(f"SELECT * FROM documents {where} ORDER BY path", params)
            names = [d[0] for d in cursor.description]
            return [self._record(row, names) for row in cursor.fetchall()]

    def document(self, doc_id: str) -> DocumentRecord | None:
        found = self._select("WHERE doc_id = ?", (doc_id,))
        return found[0] if found else None

    def documents(self, status: str | None = None) -> list[DocumentRecord]:
        return self._select("WHERE status = ?", (status,)) if status else self._select()

    def begin(self, doc_id: str, path: str, acl: Sequence[str]) -> None:
        """Mark a document as being written; its old version, if any, stays findable until commit. Until then
        it is visible only to those in both its old and its new ACL: a change of access never widens early."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO documents(doc_id, path, status, updated_at) VALUES(?, ?, 'indexing', ?) "
                "ON CONFLICT(doc_id) DO UPDATE SET status = 'indexing', path = excluded.path, "
                "updated_at = excluded.updated_at",
                (doc_id, path, now_iso()),
            )
            conn.execute(
                f"DELETE FROM doc_acl WHERE doc_id = ? AND token NOT IN ({','.join('?' * len(acl))})",
                (doc_id, *acl),
            )
        self._access_counter += 1  # after the commit: a search that read the old grants cannot cache them as new

    def commit(
        self,
        doc_id: str,
        *,
        path: str,
        title: str,
        doc_type: str,
        content_hash: str,
        size_bytes: int,
        chunk_count: int,
        acl: list[str],
        tags: Sequence[str] = (),
    ) -> None:
        """The document is fully in the store: registry row and ACL tokens in one transaction."""
        stamp = now_iso()
        with self._transaction() as conn:
            conn.execute("DELETE FROM doc_acl WHERE doc_id = ?", (doc_id,))
            conn.executemany("INSERT INTO doc_acl(doc_id, token) VALUES(?, ?)", [(doc_id, t) for t in acl])
            conn.execute(
                "INSERT INTO documents(doc_id, path, title, doc_type, content_hash, size_bytes, version, chunk_count, "
                "acl_groups, tags, status, error, ingested_at, updated_at) "
                "VALUES(?, ?, ?, ?, ?, ?, 1, ?, ?, ?, 'indexed', NULL, ?, ?) "
                "ON CONFLICT(doc_id) DO UPDATE SET path = excluded.path, title = excluded.title, "
                "doc_type = excluded.doc_type, size_bytes = excluded.size_bytes, chunk_count = excluded.chunk_count, "
                "acl_groups = excluded.acl_groups, tags = excluded.tags, status = 'indexed', error = NULL, "
                "ingested_at = excluded.ingested_at, "
                "updated_at = excluded.updated_at, "
                "version = CASE WHEN documents.content_hash IS excluded.content_hash THEN documents.version "
                "ELSE documents.version + 1 END, content_hash = excluded.content_hash",
                (
                    doc_id,
                    path,
                    title,
                    doc_type,
                    content_hash,
                    size_bytes,
                    chunk_count,
                    json.dumps(acl),
                    json.dumps(sorted(tags)),
                    stamp,
                    stamp,
                ),
            )
        self._access_counter += 1

    def record_failure(self, doc_id: str, path: str, error: str) -> None:
        """A file that failed: a new one is listed as failed; an indexed one keeps its last good version."""
        self._write(
            "INSERT INTO documents(doc_id, path, status, error, updated_at) VALUES(?, ?, 'failed', ?, ?) "
            "ON CONFLICT(doc_id) DO UPDATE SET error = excluded.error, updated_at = excluded.updated_at, "
            "status = CASE WHEN documents.content_hash IS NULL THEN 'failed' ELSE 'indexed' END",
            (doc_id, path, error, now_iso()),
        )

    def mark_deleting(self, doc_id: str) -> None:
        self._write("UPDATE documents SET status = 'deleting', updated_at = ? WHERE doc_id = ?", (now_iso(), doc_id))

    def forget(self, doc_id: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM doc_acl WHERE doc_id = ?", (doc_id,))
            conn.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))
        self._access_counter += 1

    def acl(self, doc_ids: Iterable[str]) -> dict[str, set[str]]:
        """Document id -> ACL tokens, for the given documents (a document without any grants nothing)."""
        wanted = list(dict.fromkeys(doc_ids))
        found: dict[str, set[str]] = {d: set() for d in wanted}
        with self._lock:
            for start in range(0, len(wanted), 500):
                batch = wanted[start : start + 500]
                marks = ",".join("?" * len(batch))
                for doc_id, tok in self.conn.execute(
                    f"SELECT doc_id, token FROM doc_acl WHERE doc_id IN ({marks})", batch
                ):
                    found[doc_id].add(tok)
        return found

    # -- access and filters -----------------------------------------------------------------------------------

    @staticmethod
    def _visible(tokens: Iterable[str], filters: SearchFilters | None) -> tuple[str, list]:
        """SQL over ``documents d``: the documents sharing a token with ``tokens`` that match ``filters``."""
        allowed = sorted(set(tokens))
        if not allowed:
            raise ValueError("an access filter needs at least one token")  # callers always pass public
        # A probe of doc_acl's primary key per document: an ``IN (SELECT ...)`` list is built first, in full, by
        # every statement (50,000 documents for a caller who sees all of a million chunks).
        marks = ",".join("?" * len(allowed))
        sql = f"EXISTS (SELECT 1 FROM doc_acl a WHERE a.doc_id = d.doc_id AND a.token IN ({marks}))"
        params: list = list(allowed)
        if filters is not None:
            if filters.path_prefix:
                sql += " AND substr(d.path, 1, ?) = ?"
                params += [len(filters.path_prefix), filters.path_prefix]
            if filters.path_glob:
                sql += " AND d.path GLOB ?"
                params.append(filters.path_glob)
            if filters.doc_type:
                sql += f" AND d.doc_type IN ({','.join('?' * len(filters.doc_type))})"
                params += list(filters.doc_type)
            if filters.title:
                sql += " AND instr(lower(d.title), lower(?)) > 0"
                params.append(filters.title)
            if filters.tags:
                sql += (
                    " AND EXISTS (SELECT 1 FROM json_each(d.tags) AS t WHERE t.value IN "
                    f"({','.join('?' * len(filters.tags))}))"
                )
                params += list(filters.tags)
            if filters.ingested_after:
                sql += " AND d.ingested_at >= ?"
                params.append(filters.ingested_after)
            if filters.ingested_before:
                sql += " AND d.ingested_at < ?"
                params.append(filters.ingested_before)
        return sql, params

    def allowed_documents(self, tokens: Iterable[str], filters: SearchFilters | None = None) -> list[str]:
        """Ids of the documents a caller with these ACL tokens may see, narrowed by ``filters``."""
        where, params = self._visible(tokens, filters)
        if filters is None:  # the access tokens alone: doc_acl's primary key answers it (rows go with documents)
            sql, params = f"SELECT doc_id FROM doc_acl WHERE token IN ({','.join('?' * len(params))})", params
        else:
            sql = f"SELECT d.doc_id FROM documents d WHERE {where}"
        with self._reader() as conn:
            return list(dict.fromkeys(row[0] for row in conn.execute(sql, params)))
