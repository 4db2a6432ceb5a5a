"""The store's search index kept on disk and in step with every process's writes (issue 16, items 3 and 4).

Start-up loads the saved copy (``rag.index_files``) instead of reading every vector back from Chroma, and brings it
up to date from the registry's change log: the chunk ids each vector write added or removed, by ``vectors_version``
(``DocumentRegistry.vector_changes``). A process that finds the version moved on applies those changes too,
fetching only the added vectors, instead of reloading everything. The index is rebuilt from Chroma (one log line)
only when the copy is missing or damaged, ahead of the store, older than the log reaches back, or when a writer
died mid-write: a writer marks itself (``writer-<pid>-<token>.mark``) before each Chroma write and unmarks after
the version bump that logs it, so a marker whose process is gone means Chroma may hold changes no version names.

Saving a large index costs seconds, so it is saved at most every ``save_every`` seconds after writes (30 s, or ten
times the last save's duration if longer: saving then takes at most a tenth of a writer's time), at close,
after a rebuild, and after deletions (which also empty the change log: both name the deleted chunks, and a
deleted document leaves nothing on disk). The log covers what happened since the last save.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from filelock import FileLock

from rag.errors import IndexFileError
from rag.index_files import saved_version

if TYPE_CHECKING:
    from rag.registry import DocumentRegistry
    from rag.seams import SearchIndex

log = logging.getLogger(__name__)

SAVE_EVERY_S = 30.0
SAVE_COST_SHARE = 10  # at least this many times a save's duration between saves: at 1M chunks a save takes seconds
# (ids, doc ids, vectors) batches of Chroma's records: every record (None), or those of the given ids
Records = Callable[[Sequence[str] | None], Iterable[tuple[list[str], list[str], Any]]]
_OURS: set[str] = set()  # marker tokens of this process's keepers: a marker of our pid without one is a dead one's


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class IndexKeeper:
    """One store's search index: opened from disk or rebuilt, caught up from the change log, saved."""

    def __init__(
        self,
        folder: Path,
        new_index: Callable[[], SearchIndex],
        registry: DocumentRegistry,
        records: Records,
        count: Callable[[], int],
        *,
        check_count: bool,
    ) -> None:
        self.folder = Path(folder)
        self.registry = registry
        self._new_index, self._records, self._count, self._check_count = new_index, records, count, check_count
        self.index: SearchIndex | None = None
        self.version: int | None = None  # the vectors_version the index reflects
        self.lock = threading.RLock()  # held while the index is opened, caught up or saved
        self.save_every = SAVE_EVERY_S
        self.save_cost_share = SAVE_COST_SHARE
        self._save_gap = 0.0
        self._changed = False  # since the last save
        self._last_save = time.monotonic()
        token = secrets.token_hex(6)
        _OURS.add(token)
        self._marker = self.folder / f"writer-{os.getpid()}-{token}.mark"
        self._marking = threading.Lock()
        self._writes = 0  # in flight
        self._failed_write = False
        self.opened_from: str | None = None  # "disk" or "store": how the index was last opened
        self.deltas = 0  # catch-ups from the change log
        self.rebuilds = 0

    def get(self) -> SearchIndex:
        """The index, opened on first use, and caught up with other processes' writes."""
        index, version = self.index, self.version
        if index is not None and self.registry.vectors_version() == version:
            return index  # the common case: no lock, so searches run beside each other
        with self.lock:
            if self.index is None:
                self._open()
            else:
                current = self.registry.vectors_version()
                if current != self.version and not self._catch_up(self.index, self.version or 0, current):
                    self._open()
            return self.index  # type: ignore[return-value]

    def _open(self) -> None:
        current = self.registry.vectors_version()
        index = self._new_index()
        level = logging.WARNING
        try:
            reason = self._stale(index, index.load(self.folder), current)
        except IndexFileError as exc:
            reason = f"the saved copy at {self.folder} {exc.detail.get('reason', exc)}"
            if exc.detail.get("reason") == "is missing":
                level = logging.INFO  # never saved: a new store, or one from before the saved index
        if reason is None:
            self.index, self.version, self.opened_from = index, current, "disk"
            return
        log.log(level, "search index: %s; rebuilding it from the store's records", reason)
        index = self._new_index()
        for ids, doc_ids, vectors in self._records(None):
            index.add(ids, doc_ids, vectors)
        self.index, self.version, self.opened_from = index, current, "store"
        self.rebuilds += 1
        self.save(force=True)  # over a damaged copy of the same version too
        for marker in self._dead_markers():  # what the dead writer left in Chroma is in the rebuilt index
            marker.unlink(missing_ok=True)

    def _stale(self, index: SearchIndex, saved: int, current: int) -> str | None:
        """Why the copy just loaded at version ``saved`` cannot serve (it is caught up here), or None."""
        dead = self._dead_markers()
        if dead:
            return f"a writer stopped mid-write ({dead[0].name})"
        if saved > current:
            return f"the saved copy is of store version {saved}, ahead of the store ({current})"
        if saved < current and not self._catch_up(index, saved, current):
            return f"the saved copy is of store version {saved}, older than the change log reaches ({current} now)"
        if self._check_count and len(index) != (held := self._count()):
            return f"the saved copy holds {len(index)} chunks, the store {held}"
        return None

    def _catch_up(self, index: SearchIndex, since: int, until: int) -> bool:
        """Apply the logged changes after ``since`` up to ``until``; False when the log no longer reaches back."""
        changes = self.registry.vector_changes(since, until)
        if changes is None:
            return False
        index.remove([chunk_id for chunk_id, removed in changes.items() if removed])
        wanted = [chunk_id for chunk_id, removed in changes.items() if not removed]
        logged = self.registry.vector_payloads(since, until)
        found = [chunk_id for chunk_id in wanted if chunk_id in logged]
        if found:  # the writer logged these vectors: no round trip to Chroma
            vectors = np.frombuffer(b"".join(logged[chunk_id][1] for chunk_id in found), dtype=np.float32)
            index.add(found, [logged[chunk_id][0] for chunk_id in found], vectors.reshape(len(found), -1))
        found = set(found)
        for ids, doc_ids, vectors in self._records([chunk_id for chunk_id in wanted if chunk_id not in found]):
            index.add(ids, doc_ids, vectors)
            found.update(ids)
        index.remove([chunk_id for chunk_id in wanted if chunk_id not in found])  # removed again since
        self.version = until
        self.deltas += 1
        self._changed = True
        return True

    def _dead_markers(self) -> list[Path]:
        dead = []
        for marker in sorted(self.folder.glob("writer-*.mark")):
            _, pid, token = (marker.stem.split("-") + ["", ""])[:3]
            ours = pid == str(os.getpid()) and token in _OURS
            if not ours and not (pid.isdigit() and pid != str(os.getpid()) and _alive(int(pid))):
                dead.append(marker)
        return dead

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Around one write to Chroma and its version bump. A write that fails leaves the marker until the
        process ends: what it left in Chroma is then repaired by the next start."""
        with self._marking:
            if self._writes == 0:
                self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._marker.touch(mode=0o600)
            self._writes += 1
        ok = False
        try:
            yield
            ok = True
        finally:
            with self._marking:
                self._writes -= 1
                self._failed_write |= not ok
                if self._writes == 0 and not self._failed_write:
                    self._marker.unlink(missing_ok=True)

    def wrote(self, previous: int, now: int) -> None:
        """This process's write (already applied to the index) moved the version from ``previous`` to ``now``."""
        with self.lock:
            if self.index is None or self.version != previous:
                return  # another process wrote in between: the next search catches up from the log
            self.version, self._changed = now, True
            if time.monotonic() - self._last_save >= max(self.save_every, self._save_gap):
                self.save()

    def save(self, *, force: bool = False) -> None:
        """Save the index if it changed (``force``: even if not), unless a copy of a later version is there."""
        with self.lock:
            if self.index is None or self.version is None or not (self._changed or force):
                return
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            with FileLock(str(self.folder / "save.lock")):  # processes sharing a Chroma server save in turn
                on_disk = saved_version(self.folder)
                if on_disk is None or on_disk < self.version or (force and on_disk == self.version):
                    started = time.perf_counter()
                    self.index.save(self.folder, self.version)
                    took = time.perf_counter() - started
                    self._save_gap = self.save_cost_share * took  # a big index is saved less often
                    log.info("search index: %d chunks saved in %.2f s", len(self.index), took)
            self._changed, self._last_save = False, time.monotonic()

    def forget_deleted(self) -> None:
        """After deletions: empty the change log and leave a saved copy without the deleted chunks."""
        with self.lock:
            if self.index is None and saved_version(self.folder) is None:
                self.registry.clear_vector_changes()
                return
            self.get()  # the deletions applied, from the log if another process made them
            self.registry.clear_vector_changes()
            self.save(force=True)

    def close(self) -> None:
        with self.lock:
            self.save()
            self.index, self.version = None, None
