"""Admin routes under /v1/admin: ingest jobs (server-side paths or uploads) and the document registry.

These routes change what the assistant knows. Once authentication exists they need the admin role; until then
they are off by default (``server.admin_api: false``, the routes are absent and answer 404) and, when turned on,
the server should be bound to loopback only (``server.host: 127.0.0.1``).

Jobs run one at a time on a background thread (``ingest.jobs.JobManager``); job history is kept in memory only
(the last 100 jobs) and is forgotten on restart, while the documents the jobs wrote stay on disk. Uploaded
files are kept under ``data_dir/uploads/<job id>/`` as the documents' source. Document deletions run on the
same thread as the jobs, so they wait for a running job instead of racing it for the store's writer lock
(409 if it takes more than 30 s, or if another process, such as `rag ingest`, holds the lock).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ingest.jobs import JobManager
from rag.docstore import DocumentRecord
from rag.errors import NotFoundError
from serving.auth import require_admin
from serving.deps import get_ready_container
from serving.record_models import model_of

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
DocumentStatus = Literal["indexing", "indexed", "failed", "deleting"]


def get_jobs(request: Request) -> JobManager:
    return request.app.state.jobs


JobsDep = Annotated[JobManager, Depends(get_jobs)]


# -- models ---------------------------------------------------------------------------------------------------


class PathJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    paths: list[str] = Field(
        min_length=1, max_length=1000, description="Files or folders on the server, inside server.admin_paths."
    )
    acl: list[str] | None = Field(
        None,
        description=(
            "Who may see these documents: public, group:NAME, user:NAME; an empty list is refused. Null: each "
            "document's sidecar file (<file>.acl), else what the registry holds, else ingest.default_access."
        ),
    )
    prune: bool = Field(False, description="Also remove documents under these folders whose files are gone.")
    tags: list[str] | None = Field(
        None, description="Tags for search filters; null keeps each document's current tags (none for a new one)."
    )


class JobFileModel(BaseModel):
    path: str
    status: Literal["added", "updated", "unchanged", "failed", "removed"]
    doc_id: str | None = None
    chunks: int = Field(0, description="Chunks the document has now.")
    embedded: int = Field(0, description="Chunks embedded by this job (0 when unchanged).")
    error: str | None = Field(None, description="Why the file failed, with a fix.")
    code: str | None = Field(None, description="Stable error code, e.g. empty_document.")


class JobSummaryModel(BaseModel):
    id: str
    kind: Literal["paths", "upload"]
    state: JobState
    created_at: str
    started_at: str | None
    finished_at: str | None
    paths: list[str] = Field(description="Resolved server-side paths, or where the uploaded files were saved.")
    acl: list[str] | None
    tags: list[str] | None = None
    prune: bool
    cancel_requested: bool
    total_files: int | None = Field(description="Files found; null until discovery has run.")
    files_done: int
    files_removed: int = Field(description="Documents removed by prune.")
    chunks_embedded: int
    rate_chunks_per_s: float
    eta_s: float | None = Field(description="Estimated seconds left; null while unknown.")
    elapsed_s: float
    counts: dict[str, int] = Field(description="Files per status: added, updated, unchanged, removed, failed.")
    error: str | None = Field(description="Why the job as a whole failed (per-file errors are under files).")
    error_code: str | None
    summary: str | None


class JobModel(JobSummaryModel):
    files: list[JobFileModel] = Field(description="One result per file, in the order they finished.")


class JobListModel(BaseModel):
    jobs: list[JobSummaryModel] = Field(description="Newest first, without per-file results: GET a job for those.")
    count: int


# A registry record as the API returns it: DocumentRecord's fields (model_of), the status narrowed to its states.
# (A comment, not a docstring: a docstring would become the schema's description.)
class DocumentModel(model_of(DocumentRecord)):  # type: ignore[misc]  # a base built from the dataclass
    status: DocumentStatus
    acl: list[str] = Field(default_factory=list, description="ACL tokens: public, group:NAME, user:NAME.")
    tags: list[str] = Field(default_factory=list, description="Tags for search filters.")


class DocumentListModel(BaseModel):
    documents: list[DocumentModel]
    count: int


def _location(job_id: str) -> str:
    return f"{router.prefix}/ingest/jobs/{job_id}"


# -- jobs -----------------------------------------------------------------------------------------------------


@router.post("/ingest/jobs", status_code=202, response_model=JobModel, dependencies=[Depends(get_ready_container)])
async def submit_paths(body: PathJobRequest, jobs: JobsDep, response: Response) -> dict:
    """Queue a job over server-side files and folders; poll the `Location` for progress."""
    job = await run_in_threadpool(jobs.submit_paths, body.paths, body.acl, body.prune, body.tags)
    response.headers["Location"] = _location(job.id)
    return jobs.snapshot(job)


@router.post("/ingest/uploads", status_code=202, response_model=JobModel, dependencies=[Depends(get_ready_container)])
async def submit_upload(
    files: Annotated[list[UploadFile], File(description="One or more files; repeat the `files` part.")],
    jobs: JobsDep,
    response: Response,
    acl: Annotated[
        str | None,
        Form(description="Comma-separated ACL tokens (public, group:NAME, user:NAME); absent: ingest.default_access."),
    ] = None,
) -> dict:
    """Save the uploaded files (each at most server.max_upload_mb) and queue a job over them."""
    tokens = acl.split(",") if acl is not None else None  # sent but blank: refused, as an empty list
    try:
        job = await run_in_threadpool(jobs.submit_upload, [(f.filename, f.file) for f in files], tokens)
    finally:
        for upload in files:
            await upload.close()
    response.headers["Location"] = _location(job.id)
    return jobs.snapshot(job)


@router.get("/ingest/jobs", response_model=JobListModel)
async def list_jobs(jobs: JobsDep) -> dict:
    """The last 100 jobs, kept in memory until a restart."""
    listed = [jobs.snapshot(job, files=False) for job in jobs.list()]
    return {"jobs": listed, "count": len(listed)}


@router.get("/ingest/jobs/{job_id}", response_model=JobModel)
async def get_job(job_id: str, jobs: JobsDep) -> dict:
    return jobs.snapshot(jobs.get(job_id))


@router.delete("/ingest/jobs/{job_id}", response_model=JobModel)
async def cancel_job(job_id: str, jobs: JobsDep) -> dict:
    """Cancel a job: a queued one at once, a running one after the file in hand; a finished one is unchanged."""
    return jobs.snapshot(jobs.cancel(job_id))


# -- documents ------------------------------------------------------------------------------------------------


@router.get("/documents", response_model=DocumentListModel)
async def list_documents(
    jobs: JobsDep, status: Annotated[DocumentStatus | None, Query(description="Only documents in this state.")] = None
) -> dict:
    records = await run_in_threadpool(jobs.service.registry.documents, status)
    return {"documents": [r.as_dict() for r in records], "count": len(records)}


@router.get("/documents/{doc_id}", response_model=DocumentModel)
async def get_document(doc_id: str, jobs: JobsDep) -> dict:
    record = await run_in_threadpool(jobs.service.registry.document, doc_id)
    if record is None:
        raise NotFoundError(f"no document with id {doc_id}: GET /v1/admin/documents lists them")
    return record.as_dict()


@router.delete("/documents/{doc_id}", response_model=DocumentModel)
async def delete_document(doc_id: str, jobs: JobsDep) -> dict:
    """Remove a document's chunks, texts and registry row (and its uploaded file); returns the removed record."""
    record = await run_in_threadpool(jobs.delete_document, doc_id)
    return record.as_dict()
