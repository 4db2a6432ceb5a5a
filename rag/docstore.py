"""The document registry and the chunk texts, in one SQLite file beside the vector store.

Chroma holds vectors and metadata only. Chunk texts live here, under ``secure_delete``, so deleting a document
really removes its words from disk: Chroma keeps what it was sent in its write-ahead log for a while, and
SQLite keeps deleted rows in free pages unless told to overwrite them.

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
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rag.errors import StoreError

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
    acl_groups   TEXT NOT NULL DEFAULT '[]',
    status       TEXT NOT NULL,
    error        TEXT,
    ingested_at  TEXT,
    updated_at   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_path ON documents(path);
CREATE TABLE IF NOT EXISTS chunks (
    id     TEXT PRIMARY KEY,
    doc_id TEXT NOT NULL,
    text   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
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
    acl_groups: list[str] = field(default_factory=list)
    error: str | None = None
    ingested_at: str | None = None
    updated_at: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class DocStore:
    """SQLite in WAL mode; one connection shared by threads under a lock (writes are short)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")  # durable across a process kill; WAL keeps it fast
                conn.execute("PRAGMA secure_delete=ON")  # deleted text is overwritten, not left in free pages
                conn.executescript(SCHEMA)
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"cannot open the document registry {self.path}: {exc}") from exc
            self._conn = conn
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _write(self, sql: str, rows: Iterable[Sequence] | Sequence = ()) -> None:
        with self._lock:
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                if isinstance(rows, list):
                    conn.executemany(sql, rows)
                else:
                    conn.execute(sql, rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    # -- meta -------------------------------------------------------------------------------------------------

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
        values["acl_groups"] = json.loads(values["acl_groups"] or "[]")
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

    def begin(self, doc_id: str, path: str) -> None:
        """Mark a document as being written; its old version, if any, stays findable until commit."""
        self._write(
            "INSERT INTO documents(doc_id, path, status, updated_at) VALUES(?, ?, 'indexing', ?) "
            "ON CONFLICT(doc_id) DO UPDATE SET status = 'indexing', path = excluded.path, "
            "updated_at = excluded.updated_at",
            (doc_id, path, now_iso()),
        )

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
        acl_groups: list[str],
    ) -> None:
        stamp = now_iso()
        self._write(
            "INSERT INTO documents(doc_id, path, title, doc_type, content_hash, size_bytes, version, chunk_count, "
            "acl_groups, status, error, ingested_at, updated_at) "
            "VALUES(?, ?, ?, ?, ?, ?, 1, ?, ?, 'indexed', NULL, ?, ?) "
            "ON CONFLICT(doc_id) DO UPDATE SET path = excluded.path, title = excluded.title, "
            "doc_type = excluded.doc_type, size_bytes = excluded.size_bytes, chunk_count = excluded.chunk_count, "
            "acl_groups = excluded.acl_groups, status = 'indexed', error = NULL, ingested_at = excluded.ingested_at, "
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
                json.dumps(acl_groups),
                stamp,
                stamp,
            ),
        )

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
        self._write("DELETE FROM documents WHERE doc_id = ?", (doc_id,))

    # -- chunk texts ------------------------------------------------------------------------------------------

    def put_chunks(self, rows: Sequence[tuple[str, str, str]]) -> None:
        """(chunk id, doc id, text) rows; an id already present keeps its text (ids are content hashes)."""
        if rows:
            self._write("INSERT OR REPLACE INTO chunks(id, doc_id, text) VALUES(?, ?, ?)", list(rows))

    def texts(self, ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(ids), 500):
                batch = list(ids[start : start + 500])
                marks = ",".join("?" * len(batch))
                found.update(self.conn.execute(f"SELECT id, text FROM chunks WHERE id IN ({marks})", batch).fetchall())
        return found

    def chunk_ids(self, doc_id: str | None = None) -> set[str]:
        with self._lock:
            if doc_id is None:
                return {r[0] for r in self.conn.execute("SELECT id FROM chunks")}
            return {r[0] for r in self.conn.execute("SELECT id FROM chunks WHERE doc_id = ?", (doc_id,))}

    def delete_chunks(self, ids: Sequence[str]) -> None:
        if ids:
            self._write("DELETE FROM chunks WHERE id = ?", [(i,) for i in ids])
