"""Admin ingest jobs, run one at a time on a single background worker thread, in submission order.

A job ingests server-side paths (each must resolve, symlinks followed, inside one of ``server.admin_paths``) or
files uploaded over HTTP. Uploads are streamed to ``data_dir/uploads/<job id>/<file name>`` and then ingested
like server-side paths: they stay there as the documents' source (the registry points at them and a re-ingest
reads them again). Deleting such a document through :meth:`JobManager.delete_document` also removes its
uploaded file, so its words leave the disk with it. A folder holding symlinks to files outside
``server.admin_paths`` fails its job rather than letting the links be followed.

Progress (files done, chunks embedded, rate, ETA, per-file results) is updated live from the pipeline's
``progress`` and ``on_total`` callbacks. A job that cannot run at all (another writer holds the store, the
embedder does not match the store) fails at once with the pipeline's message; bad files only fail themselves.

Document deletions run on the same worker thread, ahead of queued jobs, so they never race a job for the
writer lock: a deletion waits for the running job to finish, up to ``delete_wait_s``, and is then refused with
a 409 naming that job instead of hanging the request.

Job history is kept in memory only: the last 100 jobs (queued and running ones are never dropped). A restart
forgets the jobs; the documents they wrote are on disk and stay.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ingest.pipeline import FileResult, IngestReport, IngestService, discover
from rag.acl import normalize_tags, normalize_tokens
from rag.docstore import DocumentRecord, now_iso
from rag.errors import (
    InvalidRequestError,
    JobsClosedError,
    NotFoundError,
    PathNotAllowedError,
    RagError,
    StoreBusyError,
    UploadTooLargeError,
)
from rag.storage import PRIVATE_DIR, PRIVATE_FILE, disk_fault

if TYPE_CHECKING:
    from rag.container import Container

log = logging.getLogger(__name__)

MAX_JOBS = 100
TERMINAL = ("succeeded", "failed", "cancelled")
COPY_CHUNK = 1024 * 1024
MAX_NAME_BYTES = 255

# Queue priorities: stop first, then deletions, then ingest jobs (FIFO within one priority).
_STOP, _TASK, _JOB = 0, 1, 2


Upload = tuple[str | None, bytes | BinaryIO]


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


@dataclass
class _Task:
    """A callable run on the job thread (document deletions), its outcome delivered through a Future."""

    fn: Callable[[], Any]
    future: Future = field(default_factory=Future)


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


def safe_filename(name: str | None) -> str:
    """The last path component of an uploaded file's name, without control characters; refuses ``..`` and blanks."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    if base in ("", ".", ".."):
        raise InvalidRequestError(
            f"uploaded file name {name!r} has no usable file name: send each file with a name such as report.pdf"
        )
    if len(base.encode()) > MAX_NAME_BYTES:
        raise InvalidRequestError(f"uploaded file name {base[:40]!r}... is longer than {MAX_NAME_BYTES} bytes")
    return base


def numbered_filename(base: str, n: int) -> str:
    """``report-2.pdf`` for a second part named ``report.pdf``; the stem is cut so the name stays a usable length."""
    stem, dot, suffix = base.rpartition(".")
    tail = f"-{n}.{suffix}" if dot and stem else f"-{n}"
    if len(tail.encode()) >= MAX_NAME_BYTES // 2:  # an odd, very long extension: number the whole name
        stem, tail = base, f"-{n}"
    elif not (dot and stem):
        stem = base
    return stem.encode()[: MAX_NAME_BYTES - len(tail.encode())].decode(errors="ignore") + tail


def normalise_acl(tokens: Sequence[str] | None) -> list[str] | None:
    """Validated ACL tokens (public, group:NAME, user:NAME); an empty list is refused. None leaves each document's
    ACL to its sidecar file, the ACL map or what the registry holds (``ingest.default_access`` for a new one)."""
    if tokens is None:
        return None
    for entry in tokens:
        if "," in str(entry):
            raise InvalidRequestError(f"ACL entry {entry!r} contains a comma: give each token as its own item")
    return normalize_tokens(str(t) for t in tokens)


class JobManager:
    """Queues ingest jobs and deletions for one worker thread, started on first use; keeps the last 100 jobs."""

    def __init__(
        self, container: Container, *, service: IngestService | None = None, delete_wait_s: float = 30.0
    ) -> None:
        self.settings = container.settings
        self.service = service or container.ingest_service()
        self.delete_wait_s = delete_wait_s
        self.uploads_dir = Path(self.settings.data_dir) / "uploads"
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._queue: queue.PriorityQueue[tuple[int, int, Job | _Task | None]] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._worker: threading.Thread | None = None
        self._current: Job | None = None
        self._closed = False

    # -- submitting -------------------------------------------------------------------------------------------

    def check_paths(self, paths: Sequence[str | Path]) -> list[Path]:
        """Resolved paths, each inside one of ``server.admin_paths``; refuses anything else."""
        if not paths:
            raise InvalidRequestError("no paths given: send `paths` with one or more files or folders")
        if not self.settings.server.admin_paths:
            raise PathNotAllowedError(
                "server-side ingest is off: no folder is allowed yet. Add the folder to server.admin_paths "
                "(e.g. RAG_SERVER__ADMIN_PATHS='[\"/srv/docs\"]') and restart, or upload the files instead"
            )
        roots = self._roots()
        resolved: list[Path] = []
        for raw in paths:
            text = str(raw)
            if not text.strip() or "\x00" in text:
                raise InvalidRequestError(f"path {text!r} is not a usable path")
            try:
                path = Path(text).expanduser().resolve()
            except (OSError, RuntimeError):  # a symlink loop
                raise InvalidRequestError(f"{text}: the symlink loops back on itself: fix or remove it") from None
            if not _inside(path, roots):
                allowed = ", ".join(str(r) for r in roots)
                raise PathNotAllowedError(
                    f"{text} is outside the folders the admin API may read ({allowed}): "
                    "add the folder to server.admin_paths and restart, or upload the files instead"
                )
            if not path.exists():
                raise InvalidRequestError(f"{text}: no such file or folder on the server: check the path")
            resolved.append(path)
        return list(dict.fromkeys(resolved))

    def _roots(self) -> list[Path]:
        return [Path(root).expanduser().resolve() for root in self.settings.server.admin_paths]

    def check_links(self, paths: Sequence[Path]) -> None:
        """Refuse a job whose folders hold symlinks to files outside ``server.admin_paths``.

        The pipeline follows symlinked files found in a folder, so the check on the requested paths alone would
        let a link inside an allowed folder read anything the server can. Run just before the job, on the worker.
        """
        roots = self._roots()
        files, _ = discover(paths)
        outside = [f for f in files if not _inside(f, roots)]
        if outside:
            shown = ", ".join(str(f) for f in outside[:3]) + (
                f" and {len(outside) - 3} more" if len(outside) > 3 else ""
            )
            raise PathNotAllowedError(
                f"the folder links to files outside server.admin_paths ({shown}): remove the symlinks, or add "
                "the folder they point into to server.admin_paths and restart"
            )

    def submit_paths(
        self,
        paths: Sequence[str | Path],
        acl: Sequence[str] | None = None,
        prune: bool = False,
        tags: Sequence[str] | None = None,
    ) -> Job:
        """Queue a job over server-side files and folders (checked against ``server.admin_paths`` first)."""
        self._check_open()
        resolved = self.check_paths(paths)
        labels = normalize_tags(tags) if tags is not None else None
        job = Job(new_job_id(), "paths", [str(p) for p in resolved], normalise_acl(acl), bool(prune), labels)
        return self._enqueue(job)

    def submit_upload(self, files: Sequence[Upload], acl: Sequence[str] | None = None) -> Job:
        """Save uploaded files under ``data_dir/uploads/<job id>/`` (they stay as the documents' source), queue them.

        Each item is ``(file name, bytes or a binary file object)``; file objects are read in chunks and one over
        ``server.max_upload_mb`` is refused with a 413 and nothing is kept.
        """
        self._check_open()
        if not files:
            raise InvalidRequestError("no files in the upload: send one or more `files` parts")
        tokens = normalise_acl(acl)
        names: list[str] = []
        for name, _ in files:
            base = safe_filename(name)
            candidate, n = base, 1
            while candidate in names:  # two parts with one name: keep both
                n += 1
                candidate = numbered_filename(base, n)
            names.append(candidate)
        job_id = new_job_id()
        folder = (self.uploads_dir / job_id).resolve()
        saved: list[Path] = []
        try:
            # Uploads are document text: owner-only, like the registry and the keys file.
            self.uploads_dir.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
            folder.mkdir(mode=PRIVATE_DIR)
            for name, (_, content) in zip(names, files, strict=True):
                target = folder / name
                if target.parent != folder:  # cannot happen after safe_filename; never write elsewhere
                    raise InvalidRequestError(f"uploaded file name {name!r} is not a plain file name")
                self._save(target, content)
                saved.append(target)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        except OSError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            fault = disk_fault(exc, self.uploads_dir)
            if fault is None:
                raise
            raise fault from None
        return self._enqueue(Job(job_id, "upload", [str(p) for p in saved], tokens))

    def _save(self, target: Path, content: bytes | BinaryIO) -> None:
        limit_mb = self.settings.server.max_upload_mb
        limit = int(limit_mb * 1024 * 1024)

        def too_large() -> UploadTooLargeError:
            return UploadTooLargeError(
                f"{target.name}: the file is over the {limit_mb:g} MB upload limit: split it, "
                "or raise server.max_upload_mb"
            )

        with os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE), "wb") as out:
            if isinstance(content, bytes | bytearray | memoryview):
                if len(content) > limit:
                    raise too_large()
                out.write(content)
                return
            written = 0
            while chunk := content.read(COPY_CHUNK):
                written += len(chunk)
                if written > limit:
                    raise too_large()
                out.write(chunk)

    def _check_open(self) -> None:
        if self._closed:
            raise JobsClosedError("the server is shutting down and takes no new jobs: retry after it restarts")

    def _enqueue(self, job: Job) -> Job:
        with self._lock:
            self._check_open()
            self._jobs[job.id] = job
            self._trim()
            self._ensure_worker()
            self._queue.put((_JOB, next(self._seq), job))
        log.info("ingest job %s queued: %s %s", job.id, job.kind, job.paths)
        return job

    def _trim(self) -> None:
        """Forget the oldest finished jobs beyond MAX_JOBS (caller holds the lock)."""
        excess = len(self._jobs) - MAX_JOBS
        for job_id in [j.id for j in self._jobs.values() if j.finished][: max(excess, 0)]:
            del self._jobs[job_id]

    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._loop, name="ingest-jobs", daemon=True)
            self._worker.start()

    # -- reading and cancelling -------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError(
                f"no ingest job with id {job_id}: only the last {MAX_JOBS} jobs are kept, in memory, until a "
                "restart: GET /v1/admin/ingest/jobs lists them"
            )
        return job

    def list(self) -> list[Job]:
        """Newest first."""
        with self._lock:
            return list(reversed(self._jobs.values()))

    def snapshot(self, job: Job, *, files: bool = True) -> dict[str, Any]:
        """A consistent copy of a job's state as plain data."""
        with self._lock:
            return job.as_dict(files=files)

    def cancel(self, job_id: str) -> Job:
        """Cancel a job: a queued one at once; a running one stops after the file in hand. Finished ones stay."""
        job = self.get(job_id)
        with self._lock:
            if job.state == "queued":
                job.cancel.set()
                self._finish(job, "cancelled", summary="cancelled before it started")
            elif job.state == "running":
                job.cancel.set()
        return job

    # -- documents --------------------------------------------------------------------------------------------

    def delete_document(self, doc_id: str) -> DocumentRecord:
        """Delete on the job thread, after the running job; refused with a 409 if that takes over delete_wait_s."""
        task = _Task(lambda: self._delete(doc_id))
        with self._lock:
            if self._closed:
                raise JobsClosedError("the server is shutting down: the document was not deleted; retry after restart")
            self._ensure_worker()
            self._queue.put((_TASK, next(self._seq), task))
        try:
            return task.future.result(timeout=self.delete_wait_s)
        except TimeoutError:
            if not task.future.cancel():  # it started meanwhile: it is quick, wait for it
                return task.future.result()
            running = self._current
            which = f"ingest job {running.id}" if running is not None else "an ingest job"
            raise StoreBusyError(
                f"{which} is still writing to the store after {self.delete_wait_s:g} s, so document {doc_id} was "
                "not deleted: retry when the job has finished (GET /v1/admin/ingest/jobs) or cancel it"
            ) from None
        except CancelledError:
            raise JobsClosedError(
                "the server shut down before the deletion ran: the document was not deleted; retry after restart"
            ) from None

    def _delete(self, doc_id: str) -> DocumentRecord:
        if self.service.registry.document(doc_id) is None:
            raise NotFoundError(f"no document with id {doc_id}: GET /v1/admin/documents lists them")
        record = self.service.delete_document(doc_id)
        source = Path(record.path)
        uploads = self.uploads_dir.resolve()
        if source.is_relative_to(uploads) and source != uploads:
            source.unlink(missing_ok=True)
            try:
                source.parent.rmdir()  # the job's folder, once its last file is gone
            except OSError:
                pass
        return record

    # -- the worker -------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            _, _, item = self._queue.get()
            if item is None:
                return
            if isinstance(item, _Task):
                if item.future.set_running_or_notify_cancel():
                    try:
                        item.future.set_result(item.fn())
                    except BaseException as exc:  # delivered to the waiting request
                        item.future.set_exception(exc)
                continue
            self._run(item)

    def _run(self, job: Job) -> None:
        with self._lock:
            if job.state != "queued":
                return
            job.state = "running"
            job.started_at = now_iso()
            job._t0 = time.monotonic()
            self._current = job
        try:
            if job.kind == "paths":
                self.check_links([Path(p) for p in job.paths])
            # Sidecar files must resolve where the documents may: inside server.admin_paths, or the upload's folder.
            roots = self._roots() if job.kind == "paths" else [Path(job.paths[0]).parent] if job.paths else []
            report = self.service.ingest_paths(
                [Path(p) for p in job.paths],
                roots=roots,
                progress=lambda result: self._progress(job, result),
                acl=job.acl,
                tags=job.tags,
                prune=job.prune,
                cancel=job.cancel,
                on_total=lambda total: self._total(job, total),
            )
        except RagError as exc:
            log.warning("ingest job %s failed: %s", job.id, exc.message)
            with self._lock:
                self._finish(job, "failed", error=exc.message, code=exc.code)
        except Exception as exc:
            log.exception("ingest job %s hit an unexpected error", job.id)
            with self._lock:
                self._finish(
                    job,
                    "failed",
                    error=f"the job hit an unexpected error ({type(exc).__name__}: {exc}); it has been logged",
                    code="internal_error",
                )
        else:
            self._done(job, report)
        finally:
            with self._lock:
                self._current = None

    def _done(self, job: Job, report: IngestReport) -> None:
        with self._lock:
            state = "cancelled" if job.cancel.is_set() else "succeeded"
            summary = report.summary()
            if state == "cancelled":
                summary = f"cancelled after {job.files_done} of {job.total_files} files; {summary}"
            self._finish(job, state, summary=summary)
        log.info("ingest job %s %s: %s", job.id, state, summary)

    def _progress(self, job: Job, result: FileResult) -> None:
        with self._lock:
            job.files.append(JobFile.from_result(result))
            if result.status == "removed":
                job.files_removed += 1
            else:
                job.files_done += 1
            job.chunks_embedded += result.embedded

    def _total(self, job: Job, total: int) -> None:
        with self._lock:
            job.total_files = total

    @staticmethod
    def _finish(
        job: Job, state: str, *, error: str | None = None, code: str | None = None, summary: str | None = None
    ) -> None:
        job.state = state
        job.finished_at = now_iso()
        job._t1 = time.monotonic()
        job.error, job.error_code, job.summary = error, code, summary

    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel queued jobs and deletions, ask the running job to stop, and wait for the worker a while."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for job in self._jobs.values():
                if job.state == "queued":
                    job.cancel.set()
                    self._finish(job, "cancelled", summary="cancelled: the server shut down before it started")
                elif job.state == "running":
                    job.cancel.set()
            while True:
                try:
                    _, _, item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Task):
                    item.future.cancel()
            worker = self._worker
            self._queue.put((_STOP, next(self._seq), None))
        if worker is not None and worker.is_alive():
            worker.join(timeout)
            if worker.is_alive():
                log.warning("the ingest job thread did not stop within %.0f s; leaving it to exit", timeout)
                return
        self.service.close()  # the parse worker processes
