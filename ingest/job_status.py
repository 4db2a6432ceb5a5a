"""What an admin ingest job is and how far it has got: the state the admin API reports, live.

Progress (files done, chunks embedded, rate, ETA, per-file results) is filled in from the pipeline's ``progress``
and ``on_total`` callbacks by :class:`ingest.jobs.JobManager`, under its lock.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ingest.report import FileResult
from rag.docstore import now_iso

TERMINAL = ("succeeded", "failed", "cancelled")


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class JobFile:
    path: str
    status: str  # added | updated | unchanged | failed | removed
    doc_id: str | None = None
    chunks: int = 0
    embedded: int = 0
    error: str | None = None
    code: str | None = None

    @classmethod
    def from_result(cls, result: FileResult) -> JobFile:
        return cls(
            str(result.path), result.status, result.doc_id, result.chunks, result.embedded, result.error, result.code
        )


@dataclass
class Job:
    """One ingest job. Mutated only under the manager's lock; read through :meth:`JobManager.snapshot`."""

    id: str
    kind: str  # paths | upload
    paths: list[str]
    acl: list[str] | None = None
    prune: bool = False
    tags: list[str] | None = None
    state: str = "queued"  # queued | running | succeeded | failed | cancelled
    created_at: str = field(default_factory=now_iso)
    started_at: str | None = None
    finished_at: str | None = None
    total_files: int | None = None
    files_done: int = 0
    files_removed: int = 0
    chunks_embedded: int = 0
    files: list[JobFile] = field(default_factory=list)
    error: str | None = None
    error_code: str | None = None
    summary: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _t0: float | None = field(default=None, repr=False)
    _t1: float | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    def elapsed(self) -> float:
        if self._t0 is None:
            return 0.0
        return (self._t1 if self._t1 is not None else time.monotonic()) - self._t0

    def rate(self) -> float:
        """Chunks embedded per second since the job started."""
        elapsed = self.elapsed()
        return self.chunks_embedded / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        """Files left times the chunks an embedded file has had so far, over the chunk rate; None until known."""
        if self.state == "succeeded":
            return 0.0
        if self.state != "running" or self.total_files is None:
            return None
        left = max(self.total_files - self.files_done, 0)
        if left == 0:
            return 0.0
        embedded_files = sum(1 for f in self.files if f.embedded)
        rate = self.rate()
        if not embedded_files or rate <= 0:
            return None
        return left * (self.chunks_embedded / embedded_files) / rate

    def as_dict(self, *, files: bool = True) -> dict[str, Any]:
        eta = self.eta_s()
        counts = {s: 0 for s in ("added", "updated", "unchanged", "removed", "failed")}
        for f in self.files:
            counts[f.status] = counts.get(f.status, 0) + 1
        data: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "paths": list(self.paths),
            "acl": list(self.acl) if self.acl is not None else None,
            "tags": list(self.tags) if self.tags is not None else None,
            "prune": self.prune,
            "cancel_requested": self.cancel.is_set(),
            "total_files": self.total_files,
            "files_done": self.files_done,
            "files_removed": self.files_removed,
            "chunks_embedded": self.chunks_embedded,
            "rate_chunks_per_s": round(self.rate(), 2),
            "eta_s": round(eta, 1) if eta is not None else None,
            "elapsed_s": round(self.elapsed(), 3),
            "counts": counts,
            "error": self.error,
            "error_code": self.error_code,
            "summary": self.summary,
        }
        if files:
            data["files"] = [dict(f.__dict__) for f in self.files]
        return data
