"""One writer at a time for an embedded store: an OS file lock (flock), released by the kernel if the holder dies.

A second writer fails at once with the holder's pid and start time, instead of waiting or corrupting the store.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

from rag.docstore import now_iso
from rag.errors import StoreBusyError


class WriterLock:
    def __init__(self, data_dir: Path, purpose: str = "ingest") -> None:
        self.data_dir = Path(data_dir)
        self.purpose = purpose
        self.lock_path = self.data_dir / "writer.lock"
        self.owner_path = self.data_dir / "writer.owner.json"
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
            held = self.holder()
            who = f"pid {held.get('pid', '?')} ({held.get('purpose', 'a writer')}) since {held.get('since', '?')}"
            raise StoreBusyError(
                f"another writer holds the store at {self.data_dir}: {who}. Wait for it to finish or stop it; "
                "while `rag serve` runs with the admin API on, ingest through the server instead."
            ) from None
        self.previous_holder_died = self.owner_path.exists()
        self.owner_path.write_text(
            json.dumps({"pid": os.getpid(), "purpose": self.purpose, "since": now_iso(), "argv": sys.argv[:4]})
        )
        return self

    def release(self) -> None:
        if self._lock.is_locked:
            self.owner_path.unlink(missing_ok=True)
            self._lock.release()

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
