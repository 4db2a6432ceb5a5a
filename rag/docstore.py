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

import heapq
import json
import logging
import math
import queue
import re
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rag.errors import StoreError
from rag.schemas import SearchFilters
from rag.storage import create_private, disk_fault, make_private

log = logging.getLogger(__name__)

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
CREATE TABLE IF NOT EXISTS chunks (
    id     TEXT PRIMARY KEY,
    doc_id TEXT NOT NULL,
    text   TEXT NOT NULL,
    search TEXT NOT NULL DEFAULT '',
    length INTEGER NOT NULL DEFAULT 0  -- words in search, for BM25's length normalisation
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS doc_acl (
    doc_id TEXT NOT NULL,
    token  TEXT NOT NULL,
    PRIMARY KEY (token, doc_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS doc_acl_doc ON doc_acl(doc_id);
"""

# The keyword index: BM25 over each chunk's searchable text (title, heading path and text, as embedded), kept in
# step with ``chunks`` by triggers. External content: the words are stored once, in ``chunks``.
KEYWORD_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    search, content='chunks', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2'
);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_vocab USING fts5vocab(chunks_fts, 'row');
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_instances USING fts5vocab(chunks_fts, 'instance');
CREATE TRIGGER IF NOT EXISTS chunks_fts_insert AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, search) VALUES (new.rowid, new.search);
END;
CREATE TRIGGER IF NOT EXISTS chunks_fts_delete AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, search) VALUES ('delete', old.rowid, old.search);
END;
CREATE TRIGGER IF NOT EXISTS chunks_fts_update AFTER UPDATE OF search ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, search) VALUES ('delete', old.rowid, old.search);
    INSERT INTO chunks_fts(rowid, search) VALUES (new.rowid, new.search);
END;
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


_TERM = re.compile(r"[^\W_]+", re.UNICODE)
# Words that match almost every chunk: they only slow BM25 down and add noise.
_STOP = frozenset(
    "a an and are as at be by can do does for from how i if in is it me my of on or our should the this to "
    "we what when where which who why will with you your".split()
)


COMMON_FLOOR = 2000  # chunks: below this a word is never left out of the keyword leg
BM25_K1, BM25_B = 1.2, 0.75  # FTS5's bm25() constants


def word_count(text: str) -> int:
    """Words as the keyword index counts them (stop words included): a chunk's length for BM25."""
    return len(_TERM.findall(text.lower()))


def fts_terms(text: str, max_terms: int = 32) -> list[str]:
    """A query's words as the keyword index spells its terms (``unicode61 remove_diacritics 2``: lower case,
    accents folded, split at anything not a letter or digit), without stop words. They are quoted in the MATCH
    expression, so no word can act as an FTS5 operator."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(c))
    words = [w for w in _TERM.findall(folded) if w not in _STOP]
    return list(dict.fromkeys(words))[:max_terms]


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a registry written by an earlier version up to date: keyword index and ACL tokens."""
    from rag.acl import legacy_tokens

    if "tags" not in {row[1] for row in conn.execute("PRAGMA table_info(documents)")}:
        conn.execute("ALTER TABLE documents ADD COLUMN tags TEXT NOT NULL DEFAULT '[]'")
    columns = {row[1] for row in conn.execute("PRAGMA table_info(chunks)")}
    if "search" not in columns:
        conn.execute("ALTER TABLE chunks ADD COLUMN search TEXT NOT NULL DEFAULT ''")
        conn.execute("UPDATE chunks SET search = text")
    if "length" not in columns:
        conn.execute("ALTER TABLE chunks ADD COLUMN length INTEGER NOT NULL DEFAULT 0")
        rows = conn.execute("SELECT rowid, search FROM chunks").fetchall()
        conn.executemany("UPDATE chunks SET length = ? WHERE rowid = ?", [(word_count(t), r) for r, t in rows])
    had_index = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'chunks_fts'").fetchone() is not None
    conn.executescript(KEYWORD_SCHEMA)
    if not had_index:
        conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')")
    if conn.execute("SELECT 1 FROM doc_acl LIMIT 1").fetchone() is None:
        rows = conn.execute("SELECT doc_id, acl_groups FROM documents WHERE content_hash IS NOT NULL").fetchall()
        for doc_id, stored in rows:
            tokens = legacy_tokens(json.loads(stored or "[]"))
            conn.execute("UPDATE documents SET acl_groups = ? WHERE doc_id = ?", (json.dumps(tokens), doc_id))
            conn.executemany("INSERT OR IGNORE INTO doc_acl(doc_id, token) VALUES(?, ?)", [(doc_id, t) for t in tokens])


class DocStore:
    """SQLite in WAL mode: one connection for writes (and the registry's own reads), shared by threads under a
    lock, and read-only connections for searches, so that searches run beside each other and beside writes
    (each reads the last committed state)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._readers: queue.SimpleQueue[tuple[int, sqlite3.Connection]] = queue.SimpleQueue()
        self._epoch = 0  # bumped by close(): connections of an earlier epoch are closed when handed back
        # Bumped by every write that can change who sees what; caches of access decisions key on it.
        self._access_counter = 0
        # Set when other processes write to this registry too (Chroma server mode): then any commit anywhere
        # counts as a possible change of access.
        self.shared = False
        self._watch: sqlite3.Connection | None = None
        self._chunk_writes = 0  # bumped by chunk writes: the keyword statistics cache keys on it
        self._stats: dict[tuple, tuple[int, float]] = {}

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # The registry holds document text: owner-only, and SQLite gives its WAL and shm the same mode.
                create_private(self.path)
                make_private(self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"))
            except OSError as exc:
                raise self._fault(exc) from None
            try:
                conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")  # durable across a process kill; WAL keeps it fast
                conn.execute("PRAGMA secure_delete=ON")  # deleted text is overwritten, not left in free pages
                conn.executescript(SCHEMA)
                _migrate(conn)
            except sqlite3.DatabaseError as exc:
                raise self._fault(exc) from exc
            self._conn = conn
        return self._conn

    def close(self) -> None:
        with self._lock:
            self._epoch += 1
            while True:
                try:
                    self._readers.get_nowait()[1].close()
                except queue.Empty:
                    break
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._watch is not None:
                self._watch.close()
                self._watch = None

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection for one search, from a pool that grows with the searches running at once.
        Connections from before a close() are closed, not used (one handed back during a close is, later)."""
        if self._conn is None:  # the file exists with its schema up to date before anyone reads it
            with self._lock:
                self.conn  # noqa: B018
        epoch, conn = self._epoch, None
        while conn is None:
            try:
                got, conn = self._readers.get_nowait()
            except queue.Empty:
                break
            if got != epoch:
                conn.close()
                conn = None
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
                conn.execute("PRAGMA query_only=ON")
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"cannot open the document registry {self.path}: {exc}") from exc
        try:
            yield conn
        finally:
            if epoch == self._epoch:
                self._readers.put((epoch, conn))
            else:
                conn.close()

    def _fault(self, exc: BaseException) -> StoreError:
        """A full or read-only disk as one line with the fix; anything else names the registry."""
        return disk_fault(exc, self.path.parent) or StoreError(f"cannot use the document registry {self.path}: {exc}")

    def _write(self, sql: str, rows: Iterable[Sequence] | Sequence = ()) -> None:
        with self._transaction() as conn:
            if isinstance(rows, list):
                conn.executemany(sql, rows)
            else:
                conn.execute(sql, rows)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                # SQLite rolls back by itself on a full disk (SQLITE_FULL): a second ROLLBACK would then fail
                # with "no transaction is active" and hide the real reason.
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                fault = disk_fault(exc, self.path.parent) if isinstance(exc, sqlite3.OperationalError) else None
                if fault is not None:
                    raise fault from exc
                raise

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

    def vectors_version(self) -> int:
        """How many vector writes all processes have made to this store (server mode keeps indexes in step)."""
        with self._reader() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'vectors_version'").fetchone()
        return int(row[0]) if row else 0

    def bump_vectors_version(self) -> tuple[int, int]:
        """(before, after) of one atomic increment."""
        with self._transaction() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'vectors_version'").fetchone()
            before = int(row[0]) if row else 0
            conn.execute(
                "INSERT INTO meta(key, value) VALUES('vectors_version', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(before + 1),),
            )
        return before, before + 1

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

    # -- chunk texts ------------------------------------------------------------------------------------------

    def put_chunks(self, rows: Sequence[tuple[str, str, str, str]]) -> None:
        """(chunk id, doc id, text, searchable text) rows. Ids are content hashes: a present id keeps its row,
        unless its searchable text (which holds the title and heading path) changed."""
        if rows:
            self._write(
                "INSERT INTO chunks(id, doc_id, text, search, length) VALUES(?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE "
                "SET text = excluded.text, search = excluded.search, length = excluded.length "
                "WHERE chunks.search IS NOT excluded.search",
                [(*row, word_count(row[3])) for row in rows],
            )
            self._chunk_writes += 1

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
            self._chunk_writes += 1

    def check_keyword_index(self) -> None:
        """Raise ``sqlite3.DatabaseError`` unless the keyword index matches the chunk texts exactly."""
        self._write("INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('integrity-check', 1)")

    def purge_deleted_words(self) -> None:
        """Rewrite the keyword index without the entries of deleted chunks. FTS5 only marks them deleted until
        its segments merge; with ``secure_delete`` the freed pages are then overwritten. Run after deletions."""
        self._write("INSERT INTO chunks_fts(chunks_fts) VALUES ('optimize')")
        self.truncate_log()

    def truncate_log(self) -> None:
        """Copy the write-ahead log into the file and empty it. The log keeps earlier images of the pages, the
        deleted texts in them, until it is overwritten or truncated; a search holding a snapshot delays this."""
        with self._lock:
            for _ in range(100):
                if self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0:
                    return
                time.sleep(0.05)
        log.warning("the write-ahead log of %s is still in use; it is truncated when the store closes", self.path)

    # -- access and filters -----------------------------------------------------------------------------------

    @staticmethod
    def _visible(tokens: Iterable[str], filters: SearchFilters | None) -> tuple[str, list]:
        """SQL over ``documents d``: the documents sharing a token with ``tokens`` that match ``filters``."""
        allowed = sorted(set(tokens))
        if not allowed:
            raise ValueError("an access filter needs at least one token")  # callers always pass public
        sql = f"d.doc_id IN (SELECT doc_id FROM doc_acl WHERE token IN ({','.join('?' * len(allowed))}))"
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

    def keyword_search(
        self,
        query: str,
        top_k: int,
        tokens: Iterable[str],
        filters: SearchFilters | None = None,
        common_share: float = 0.02,
    ) -> list[tuple[str, float]]:
        """BM25 over the chunks of the documents a caller with ``tokens`` may see (narrowed by ``filters``):
        (chunk id, score), best first, higher is better. The access filter is part of the SQL query, checked for
        every match before the limit, so a very selective filter still returns the permitted matches.

        The statistics BM25 weighs words by (how many chunks hold each word, how many chunks there are, their
        mean length) are those of the caller's chunks only: FTS5's own ``bm25()`` counts every chunk, so a
        caller could tell from the scores whether documents hidden from them hold a word. Which words are too
        common to search (``common_share``) is decided on the caller's chunks too."""
        words = fts_terms(query)
        if not words:
            return []
        where, params = self._visible(tokens, filters)
        visible = f"EXISTS (SELECT 1 FROM documents d WHERE d.doc_id = c.doc_id AND {where})"
        hits: dict[str, list[tuple[str, int, int]]] = {}
        with self._reader() as conn:
            total, mean_length = self._visible_stats(conn, visible, params, tokens, filters)
            limit = max(common_share * total, COMMON_FLOOR)  # a small index is fast anyway: keep every word
            marks = ",".join("?" * len(words))
            anywhere = dict(conn.execute(f"SELECT term, doc FROM chunks_vocab WHERE term IN ({marks})", words))
            # A word in at most ``limit`` chunks of all is in at most that many of the caller's: kept, uncounted.
            # The others are counted among the caller's chunks (the count over all only saves that work).
            counts = {w: anywhere[w] for w in words if anywhere.get(w, 0) and anywhere[w] <= limit}
            for word in (w for w in words if anywhere.get(w, 0) > limit):
                counts[word] = conn.execute(
                    "SELECT count(*) FROM chunks_fts JOIN chunks c ON c.rowid = chunks_fts.rowid "
                    f"WHERE chunks_fts MATCH ? AND {visible}",
                    [f'"{word}"', *params],
                ).fetchone()[0]
            ordered = sorted((w for w in counts if counts[w]), key=lambda w: counts[w])
            chosen = [w for w in ordered if counts[w] <= limit] or ordered[:2]
            for word in chosen:
                found = conn.execute(
                    "SELECT c.id, v.n, c.length FROM (SELECT doc, count(*) AS n FROM chunks_instances WHERE term = ? "
                    f"GROUP BY doc) v JOIN chunks c ON c.rowid = v.doc WHERE {visible}",
                    [word, *params],
                ).fetchall()
                if found:
                    hits[word] = found
        if not hits:
            return []
        scores: dict[str, float] = {}
        for word in hits:
            df = len(hits[word])
            idf = max(math.log((total - df + 0.5) / (df + 0.5)), 1e-6)  # as FTS5: a word in most chunks adds ~0
            for chunk_id, tf, length in hits[word]:
                norm = BM25_K1 * (1 - BM25_B + BM25_B * length / mean_length)
                scores[chunk_id] = scores.get(chunk_id, 0.0) + idf * tf * (BM25_K1 + 1) / (tf + norm)
        best = heapq.nlargest(top_k, scores.items(), key=lambda item: (item[1], item[0]))
        return [(chunk_id, score) for chunk_id, score in best]

    def _visible_stats(
        self, conn: sqlite3.Connection, visible: str, params: list, tokens: Iterable[str], filters: SearchFilters | None
    ) -> tuple[int, float]:
        """(chunks, mean length) over the caller's chunks; cached until chunks or access change."""
        key = (
            tuple(sorted(set(tokens))),
            filters.model_dump_json() if filters else None,
            self.access_generation,
            self._chunk_writes,
        )
        found = self._stats.get(key)
        if found is None:
            count, length = conn.execute(
                f"SELECT count(*), total(c.length) FROM chunks c WHERE {visible}", params
            ).fetchone()
            found = (max(count, 1), (length / count if count and length else 1.0))
            if len(self._stats) > 256:
                self._stats.clear()
            self._stats[key] = found
        return found

    def texts_mentioning(
        self, phrase: str, tokens: Iterable[str], filters: SearchFilters | None = None, limit: int = 50
    ) -> list[str]:
        """Texts of up to ``limit`` chunks, of documents visible to ``tokens``, whose words hold ``phrase``'s
        words in order (as the keyword index spells them: punctuation and case are not checked here, so callers
        check the texts). Only the caller's documents count, so the answer tells nothing about others."""
        words = [w for w in _TERM.findall(phrase.lower()) if w]
        folded = ["".join(c for c in unicodedata.normalize("NFKD", w) if not unicodedata.combining(c)) for w in words]
        if not folded:
            return []
        where, params = self._visible(tokens, filters)
        sql = (
            "SELECT c.text FROM chunks_fts JOIN chunks c ON c.rowid = chunks_fts.rowid WHERE chunks_fts MATCH ? AND "
            f"EXISTS (SELECT 1 FROM documents d WHERE d.doc_id = c.doc_id AND {where}) LIMIT ?"
        )
        match = '"' + " ".join(folded).replace('"', "") + '"'
        with self._reader() as conn:
            return [text for (text,) in conn.execute(sql, [match, *params, limit])]
