"""One SQLite file in WAL mode, shared by threads: a write connection under a lock, and a pool of read-only
connections for searches, so that searches run beside each other and beside writes (each reads the last committed
state). Disk faults (full, read-only) come out as one ``StoreError`` with the fix; the registry and the keyword
index (``rag.registry``, ``rag.keyword_index``) build their tables on it."""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rag.errors import StoreError
from rag.storage import create_private, disk_fault, make_private

log = logging.getLogger(__name__)


class SQLiteFile:
    """The connections of one SQLite file; subclasses create their tables in ``_create_schema``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._readers: queue.SimpleQueue[tuple[int, sqlite3.Connection]] = queue.SimpleQueue()
        self._epoch = 0  # bumped by close(): connections of an earlier epoch are closed when handed back
        self._watch: sqlite3.Connection | None = None

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        """Create the tables, and bring a file written by an earlier version up to date."""

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
                self._create_schema(conn)
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

    def truncate_log(self) -> None:
        """Copy the write-ahead log into the file and empty it. The log keeps earlier images of the pages, the
        deleted texts in them, until it is overwritten or truncated; a search holding a snapshot delays this."""
        with self._lock:
            for _ in range(100):
                if self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0:
                    return
                time.sleep(0.05)
        log.warning("the write-ahead log of %s is still in use; it is truncated when the store closes", self.path)
