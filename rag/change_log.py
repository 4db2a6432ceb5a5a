"""The change log of vector writes, kept in the registry's SQLite file: a version counter that every process's
vector write bumps, the chunk ids each write added or removed, and the vectors of recent writes. Other processes
bring their search index up to date from it (``rag.index_keeper``) instead of reloading it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from rag.sqlite_file import SQLiteFile

SCHEMA = """
CREATE TABLE IF NOT EXISTS vector_changes (
    version  INTEGER NOT NULL,  -- the vectors_version of the write that made the change
    chunk_id TEXT NOT NULL,
    removed  INTEGER NOT NULL,  -- 1: removed; 0: added or replaced
    PRIMARY KEY (version, chunk_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vector_payloads (
    version  INTEGER NOT NULL,  -- as in vector_changes: an added chunk's document and float32 vector
    chunk_id TEXT NOT NULL,
    doc_id   TEXT NOT NULL,
    vector   BLOB NOT NULL,
    PRIMARY KEY (version, chunk_id)
) WITHOUT ROWID;
"""

# The change log of vector writes (``vector_changes``) holds every change after the version in meta
# ``vector_changes_from``; a reader further behind reloads the whole index. It keeps the last CHANGE_LOG_VERSIONS
# versions, and at most about CHANGE_LOG_ROWS rows (checked every CHANGE_LOG_CHECK versions); deletions empty it.
CHANGE_LOG_VERSIONS = 1000
CHANGE_LOG_ROWS = 200_000
CHANGE_LOG_CHECK = 64
# The vectors of the last PAYLOAD_VERSIONS writes ride along (``vector_payloads``), so that another process applies
# a recent write from this file instead of fetching the vectors back from Chroma (a Chroma server's HTTP answer for
# 1,000 vectors takes about a second); older changes, rare, are fetched. At most 1.5 KB a chunk at 384 dimensions.
PAYLOAD_VERSIONS = 64


class VectorChangeLog(SQLiteFile):
    """The vector-write counter and change log; the registry's file holds the ``meta`` table it uses."""

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        super()._create_schema(conn)
        conn.executescript(SCHEMA)
        # A registry from before the change log: it covers nothing before now.
        conn.execute(
            "INSERT OR IGNORE INTO meta(key, value) SELECT 'vector_changes_from', "
            "COALESCE((SELECT value FROM meta WHERE key = 'vectors_version'), '0')"
        )

    def vectors_version(self) -> int:
        """How many vector writes all processes have made to this store (server mode keeps indexes in step)."""
        with self._reader() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'vectors_version'").fetchone()
        return int(row[0]) if row else 0

    def bump_vectors_version(
        self,
        added: Sequence[str] = (),
        removed: Sequence[str] = (),
        payloads: Sequence[tuple[str, bytes]] = (),
    ) -> tuple[int, int]:
        """(before, after) of one atomic increment, with the chunk ids it added and removed in the change log (in
        the same transaction: a reader never sees the version without its changes). ``payloads``: (doc id, float32
        vector bytes) of each added chunk, in the order of ``added``, or nothing."""
        with self._transaction() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'vectors_version'").fetchone()
            before = int(row[0]) if row else 0
            now = before + 1
            conn.execute(
                "INSERT INTO meta(key, value) VALUES('vectors_version', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(now),),
            )
            changes = {chunk_id: 0 for chunk_id in added} | {chunk_id: 1 for chunk_id in removed}
            conn.executemany(
                "INSERT OR REPLACE INTO vector_changes(version, chunk_id, removed) VALUES(?, ?, ?)",
                [(now, chunk_id, gone) for chunk_id, gone in changes.items()],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO vector_payloads(version, chunk_id, doc_id, vector) VALUES(?, ?, ?, ?)",
                [(now, chunk_id, doc_id, vector) for chunk_id, (doc_id, vector) in zip(added, payloads, strict=True)],
            )
            conn.execute("DELETE FROM vector_payloads WHERE version <= ?", (now - PAYLOAD_VERSIONS,))
            self._trim_changes(conn, now)
        return before, now

    @staticmethod
    def _trim_changes(conn: sqlite3.Connection, now: int) -> None:
        """Keep the change log bounded: the last CHANGE_LOG_VERSIONS versions, about CHANGE_LOG_ROWS rows."""
        cut = now - CHANGE_LOG_VERSIONS
        if now % CHANGE_LOG_CHECK == 0:
            row = conn.execute(
                "SELECT version FROM vector_changes ORDER BY version DESC LIMIT 1 OFFSET ?", (CHANGE_LOG_ROWS,)
            ).fetchone()
            cut = max(cut, row[0] if row else cut)
        if cut <= int(conn.execute("SELECT value FROM meta WHERE key = 'vector_changes_from'").fetchone()[0]):
            return
        conn.execute("DELETE FROM vector_changes WHERE version <= ?", (cut,))
        conn.execute("UPDATE meta SET value = ? WHERE key = 'vector_changes_from'", (str(cut),))

    def vector_changes(self, since: int, until: int) -> dict[str, bool] | None:
        """Chunk id -> removed, the net effect of the writes after version ``since`` up to ``until``; None when
        the log no longer reaches back to ``since`` (the caller reloads everything)."""
        with self._reader() as conn:
            conn.execute("BEGIN")  # one snapshot: a trim between the two reads cannot go unseen
            try:
                floor = int(conn.execute("SELECT value FROM meta WHERE key = 'vector_changes_from'").fetchone()[0])
                if since < floor:
                    return None
                rows = conn.execute(
                    "SELECT chunk_id, removed FROM vector_changes WHERE version > ? AND version <= ? ORDER BY version",
                    (since, until),
                ).fetchall()
            finally:
                conn.execute("COMMIT")
        return {chunk_id: bool(gone) for chunk_id, gone in rows}

    def vector_payloads(self, since: int, until: int) -> dict[str, tuple[str, bytes]]:
        """Chunk id -> (doc id, float32 vector bytes) of the chunks added after ``since`` up to ``until`` whose
        vectors the log still holds (the latest write of each)."""
        with self._reader() as conn:
            rows = conn.execute(
                "SELECT chunk_id, doc_id, vector FROM vector_payloads WHERE version > ? AND version <= ? "
                "ORDER BY version",
                (since, until),
            ).fetchall()
        return {chunk_id: (doc_id, vector) for chunk_id, doc_id, vector in rows}

    def clear_vector_changes(self) -> None:
        """Empty the change log (after deletions: it names the deleted chunks); every reader behind reloads."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM vector_changes")
            conn.execute("DELETE FROM vector_payloads")
            conn.execute(
                "UPDATE meta SET value = COALESCE((SELECT value FROM meta WHERE key = 'vectors_version'), '0') "
                "WHERE key = 'vector_changes_from'"
            )
