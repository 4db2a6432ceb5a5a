"""The chunk texts and their keyword index (BM25 over SQLite FTS5), in the registry's file.

Chroma holds vectors and metadata only. Chunk texts live here, under ``secure_delete``, so deleting a document
really removes its words from disk: Chroma keeps what it was sent in its write-ahead log for a while, and
SQLite keeps deleted rows in free pages unless told to overwrite them. Every search joins the registry's access
tables (``rag.registry``) in its SQL, so it sees only the caller's documents, and so do its BM25 statistics.
"""

from __future__ import annotations

import heapq
import math
import re
import sqlite3
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

from rag import keyword_scale
from rag.registry import DocumentRegistry
from rag.schemas import SearchFilters

CHUNKS_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    id     TEXT PRIMARY KEY,
    doc_id TEXT NOT NULL,
    text   TEXT NOT NULL,
    search TEXT NOT NULL DEFAULT '',
    length INTEGER NOT NULL DEFAULT 0  -- words in search, for BM25's length normalisation
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
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


def index_words(text: str) -> list[str]:
    """A text's words as the keyword index spells its terms (``unicode61 remove_diacritics 2``: lower case,
    accents folded, split at anything not a letter or digit), stop words included."""
    text = text.lower()
    if not text.isascii():  # NFKD leaves ASCII as it is: skip it for the common case
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return _TERM.findall(text)


def fts_terms(text: str, max_terms: int = 32) -> list[str]:
    """A query's words as the keyword index spells its terms (``unicode61 remove_diacritics 2``: lower case,
    accents folded, split at anything not a letter or digit), without stop words. They are quoted in the MATCH
    expression, so no word can act as an FTS5 operator."""
    words = [w for w in index_words(text) if w not in _STOP]
    return list(dict.fromkeys(words))[:max_terms]


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the chunk texts of an earlier version up to date: searchable text, lengths and the keyword index."""
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


class KeywordIndex(DocumentRegistry):
    """Chunk texts and BM25 over them, in the registry's file: a search filters by the registry's access tables
    inside its SQL."""

    # From this many chunks on, searches take the array path (``rag.keyword_scale``); smaller stores the exact one.
    SCALE_FROM = 100_000

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._chunk_writes = 0  # bumped by chunk writes: the keyword statistics cache keys on it
        self._stats: dict[tuple, tuple[int, float]] = {}
        self._scale = keyword_scale.KeywordScale()

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        super()._create_schema(conn)
        conn.executescript(CHUNKS_SCHEMA)
        _migrate(conn)

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
        common to search (``common_share``) is decided on the caller's chunks too. A store of ``SCALE_FROM``
        chunks or more takes the array path (``rag.keyword_scale``): the same scores, in milliseconds."""
        words = fts_terms(query)
        if not words:
            return []
        key = (self._chunk_writes, self.vectors_version())  # chunk writes here; vector writes of any process
        hits: dict[str, list[tuple[str, int, int]]] = {}
        with self._reader() as conn:
            if self._scale.applies(conn, key, self.SCALE_FROM):
                return self._scale.search(self, conn, key, words, top_k, tokens, filters, common_share)
            visible, params = self._visible_chunks(tokens, filters)
            total, mean_length = self._visible_stats(conn, visible, params, tokens, filters)
            limit = max(common_share * total, COMMON_FLOOR)  # a small index is fast anyway: keep every word
            # How many chunks of all hold each word, counted no further than ``limit + 1``: fts5vocab's count reads
            # a word's whole list of chunks (140 ms for a word in every one of a million chunks), this stops early.
            anywhere = {w: self._global_count(conn, w, cap=int(limit) + 1) for w in words}
            # A word in at most ``limit`` chunks of all is in at most that many of the caller's: kept, uncounted.
            # The others are counted among the caller's chunks, only up to ``limit + 1`` (enough to know it is too
            # common for them); exact counts are needed only to pick the rarest when every word is too common.
            rare = [w for w in words if 0 < anywhere.get(w, 0) <= limit]
            common = [w for w in words if anywhere.get(w, 0) > limit]
            counts = {w: self._visible_count(conn, w, visible, params, cap=int(limit) + 1) for w in common}
            chosen = {w: anywhere[w] for w in rare} | {w: counts[w] for w in common if 0 < counts[w] <= limit}
            for word in sorted(chosen, key=lambda w: chosen[w]):  # rarest first: the scores' sums add up the same
                found = self._matches(conn, word, visible, params)
                if found:
                    hits[word] = found
            # Every word the caller can see is too common for them: the two rarest, by exact counts among their
            # own chunks. Decided on what the caller found, not on counts of all chunks: a word that only hidden
            # documents hold must not crowd out the caller's own words (an empty answer would tell them it exists).
            if not hits and common:
                exact = {w: self._visible_count(conn, w, visible, params) for w in common}
                for word in sorted((w for w in common if exact[w]), key=lambda w: exact[w])[:2]:
                    hits[word] = self._matches(conn, word, visible, params)
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

    def _visible_chunks(self, tokens: Iterable[str], filters: SearchFilters | None) -> tuple[str, list]:
        """SQL over ``chunks c``: the chunk belongs to a document the caller may see (``_visible``), with its params."""
        if filters is None:  # access alone: one probe of doc_acl's primary key per chunk, nothing built first
            allowed = sorted(set(tokens))
            if not allowed:
                raise ValueError("an access filter needs at least one token")
            marks = ",".join("?" * len(allowed))
            return f"EXISTS (SELECT 1 FROM doc_acl a WHERE a.doc_id = c.doc_id AND a.token IN ({marks}))", allowed
        where, params = self._visible(tokens, filters)
        return f"EXISTS (SELECT 1 FROM documents d WHERE d.doc_id = c.doc_id AND {where})", params

    @staticmethod
    def _global_count(conn: sqlite3.Connection, word: str, cap: int) -> int:
        """How many chunks of all hold ``word``, counting no further than ``cap``: it decides only whether the
        word is counted among the caller's chunks, never a score."""
        sql = "SELECT count(*) FROM (SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ? LIMIT ?)"
        return conn.execute(sql, [f'"{word}"', cap]).fetchone()[0]

    @staticmethod
    def _matches(conn: sqlite3.Connection, word: str, visible: str, params: list) -> list[tuple[str, int, int]]:
        """(chunk id, times the word is in it, chunk length) of the caller's chunks that hold the word."""
        return conn.execute(
            "SELECT c.id, v.n, c.length FROM (SELECT doc, count(*) AS n FROM chunks_instances WHERE term = ? "
            f"GROUP BY doc) v JOIN chunks c ON c.rowid = v.doc WHERE {visible}",
            [word, *params],
        ).fetchall()

    @staticmethod
    def _visible_count(conn: sqlite3.Connection, word: str, visible: str, params: list, cap: int | None = None) -> int:
        """How many of the caller's chunks hold ``word``, counting no further than ``cap``."""
        matches = (
            "SELECT 1 FROM chunks_fts JOIN chunks c ON c.rowid = chunks_fts.rowid "
            f"WHERE chunks_fts MATCH ? AND {visible}"
        )
        if cap is None:
            return conn.execute(f"SELECT count(*) FROM ({matches})", [f'"{word}"', *params]).fetchone()[0]
        return conn.execute(f"SELECT count(*) FROM ({matches} LIMIT ?)", [f'"{word}"', *params, cap]).fetchone()[0]

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
        visible, params = self._visible_chunks(tokens, filters)
        sql = (
            "SELECT c.text FROM chunks_fts JOIN chunks c ON c.rowid = chunks_fts.rowid WHERE chunks_fts MATCH ? AND "
            f"{visible} LIMIT ?"
        )
        match = '"' + " ".join(folded).replace('"', "") + '"'
        with self._reader() as conn:
            return [text for (text,) in conn.execute(sql, [match, *params, limit])]
