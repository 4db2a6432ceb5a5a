"""Exclusive access to an embedded store: OS file locks (flock), released by the kernel if the holder dies.

- ``WriterLock``: one ingest (or delete) at a time, across processes and within one.
- ``StoreHolder``: one *process* at a time on an embedded Chroma directory. Embedded Chroma is not made for two
  processes on one path (each keeps its own in-memory copy of the vector index, replayed from Chroma's log), so
  a second process (a CLI ingest beside a running server, say) can silently drop vectors.

A second holder fails at once with the holder's pid and start time, instead of waiting or corrupting the store.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

from rag.docstore import now_iso
from rag.errors import StoreBusyError


class WriterLock:
    name = "writer"

    def __init__(self, data_dir: Path, purpose: str = "ingest") -> None:
        self.data_dir = Path(data_dir)
        self.purpose = purpose
        self.lock_path = self.data_dir / f"{self.name}.lock"
        self.owner_path = self.data_dir / f"{self.name}.owner.json"
        self._lock = FileLock(str(self.lock_path), timeout=0)
        self.previous_holder_died = False  # its owner file was still there: it never released the lock

    def holder(self) -> dict:
        try:
            return json.loads(self.owner_path.read_text())
        except (OSError, ValueError):
            return {}

    def acquire(self) -> WriterLock:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise self.busy_error() from None
        self.previous_holder_died = self.owner_path.exists()
        try:
            self.owner_path.write_text(
                json.dumps({"pid": os.getpid(), "purpose": self.purpose, "since": now_iso(), "argv": sys.argv[:4]})
            )
        except OSError:  # a full or read-only disk: let go, or this process would refuse itself until restart
            self._lock.release()
            raise
        return self

    def who(self) -> str:
        held = self.holder()
        return f"pid {held.get('pid', '?')} ({held.get('purpose', 'a writer')}) since {held.get('since', '?')}"

    def busy_error(self) -> StoreBusyError:
        return StoreBusyError(
            f"another writer holds the store at {self.data_dir}: {self.who()}. Wait for it to finish or stop it; "
            "while `rag serve` runs with the admin API on, ingest through the server instead."
        )

    def release(self) -> None:
        if self._lock.is_locked:
            self.owner_path.unlink(missing_ok=True)
            self._lock.release()

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


class StoreHolder(WriterLock):
    """Held by the one process that has an embedded Chroma directory open, from first use until ``release``.

    Every ``ChromaStore`` on that path in this process shares it (``hold``); another process gets
    ``StoreBusyError`` naming the holder, e.g. ``rag ingest`` while ``rag serve`` has the store open.
    """

    name = "store"

    def busy_error(self) -> StoreBusyError:
        return StoreBusyError(
            f"the embedded store at {self.data_dir} is open in another process: {self.who()}. Embedded Chroma "
            "allows one process per store. Stop that process first, or, while `rag serve` runs, ingest and "
            "delete through its admin API (server.admin_api: true); `rag docs list` works beside it."
        )


_held: dict[Path, tuple[StoreHolder, int]] = {}
_held_guard = threading.Lock()


def hold_store(data_dir: Path, purpose: str | None = None) -> StoreHolder:
    """Take (or share, within this process) the one-process hold on an embedded store."""
    key = Path(data_dir).resolve()
    with _held_guard:
        holder, users = _held.get(key, (None, 0))
        if holder is None:
            holder = StoreHolder(key, purpose or " ".join(Path(a).name for a in sys.argv[:3])).acquire()
        _held[key] = (holder, users + 1)
        return holder


def release_store(data_dir: Path) -> None:
    key = Path(data_dir).resolve()
    with _held_guard:
        holder, users = _held.get(key, (None, 0))
        if holder is None:
            return
        if users > 1:
            _held[key] = (holder, users - 1)
            return
        del _held[key]
        holder.release()
