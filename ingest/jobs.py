"""The admin ingest job queue: jobs run one at a time on a single background worker thread, in submission order.

A job ingests server-side paths (allowed by :mod:`ingest.admin_paths`) or files uploaded over HTTP (saved by
:mod:`ingest.uploads`, then ingested like server-side paths). Deleting an uploaded document through
:meth:`JobManager.delete_document` also removes its uploaded file.

Progress is updated live from the pipeline's ``progress`` and ``on_total`` callbacks (:mod:`ingest.job_status`).
A job that cannot run at all (another writer holds the store, the embedder does not match the store) fails at
once with the pipeline's message; bad files only fail themselves.

Document deletions run on the same worker thread, ahead of queued jobs, so they never race a job for the
writer lock: a deletion waits for the running job to finish, up to ``delete_wait_s``, and is then refused with
a 409 naming that job instead of hanging the request.

Job history is kept in memory only: the last 100 jobs (queued and running ones are never dropped). A restart
forgets the jobs; the documents they wrote are on disk and stay.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.admin_paths import allowed_roots, check_links, check_paths
from ingest.job_status import Job, JobFile, new_job_id
from ingest.pipeline import IngestService
from ingest.report import FileResult, IngestReport
from ingest.uploads import Upload, remove_upload, save_uploads
from rag.acl import normalize_tags, normalize_tokens
from rag.docstore import DocumentRecord, now_iso
from rag.errors import InvalidRequestError, JobsClosedError, NotFoundError, RagError, StoreBusyError

if TYPE_CHECKING:
    from rag.container import Container

log = logging.getLogger(__name__)

MAX_JOBS = 100
# Queue priorities: stop first, then deletions, then ingest jobs (FIFO within one priority).
_STOP, _TASK, _JOB = 0, 1, 2


@dataclass
class _Task:
    """A callable run on the job thread (document deletions), its outcome delivered through a Future."""

    fn: Callable[[], Any]
    future: Future = field(default_factory=Future)


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

    def submit_paths(
        self,
        paths: Sequence[str | Path],
        acl: Sequence[str] | None = None,
        prune: bool = False,
        tags: Sequence[str] | None = None,
    ) -> Job:
        """Queue a job over server-side files and folders (checked against ``server.admin_paths`` first)."""
        self._check_open()
        resolved = check_paths(paths, self.settings.server.admin_paths)
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
        job_id = new_job_id()
        saved = save_uploads(self.uploads_dir, job_id, files, self.settings.server.max_upload_mb)
        return self._enqueue(Job(job_id, "upload", [str(p) for p in saved], tokens))

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
        remove_upload(Path(record.path), self.uploads_dir)
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
                check_links([Path(p) for p in job.paths], self.settings.server.admin_paths)
            # Sidecar files must resolve where the documents may: inside server.admin_paths, or the upload's folder.
            if job.kind == "paths":
                roots = allowed_roots(self.settings.server.admin_paths)
            else:
                roots = [Path(job.paths[0]).parent] if job.paths else []
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
