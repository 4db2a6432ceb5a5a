"""The admin API over fakes (HashEmbedder, EchoEngine): a real uvicorn server, real parse workers, real Chroma.

The JobManager's queueing rules (cancel, live progress, deletions waiting for a job, history cap) are checked
with a stub ingest service, so they need no timing luck.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from ingest.jobs import MAX_JOBS, JobManager
from ingest.report import FileResult, IngestReport
from ingest.uploads import safe_filename
from rag.acl import Identity
from rag.container import Container
from rag.docstore import DocumentRecord
from rag.errors import InvalidRequestError, StoreBusyError
from rag.locking import WriterLock
from rag.settings import load_settings
from rag.store import ChromaStore
from serving.app import create_app
from tests.fakes import EchoEngine, HashEmbedder, api_key_settings, auth
from tests.serving.server import running

TERMINAL = {"succeeded", "failed", "cancelled"}
HANDBOOK = "# Employee handbook\n\n" + "\n\n".join(
    f"Section {i}. Holidays are booked in the portal at least {i + 2} weeks ahead, and managers approve them."
    for i in range(12)
)


def admin_container(tmp_path: Path, **server) -> Container:
    settings = load_settings(
        data_dir=tmp_path / "data",
        chunking={"chunk_tokens": 60, "overlap_tokens": 8},
        ingest={"parse_workers": 1},
        server={"admin_api": True, "api_keys": api_key_settings(), **server},
    )
    container = Container(settings, HashEmbedder(), EchoEngine(), ChromaStore(settings.data_dir / "chroma", "test"))
    container.load()
    return container


def wait_job(client: httpx.Client, job_id: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/admin/ingest/jobs/{job_id}").json()
        if job["state"] in TERMINAL:
            return job
        assert time.monotonic() < deadline, f"job did not finish: {job}"
        time.sleep(0.05)


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "handbook.md").write_text(HANDBOOK)
    (folder / "notes.txt").write_text("The VPN must be on before opening the payroll system.\n")
    (folder / "empty.txt").write_bytes(b"")
    return folder


def test_admin_routes_are_absent_when_the_setting_is_off(fake_container):
    assert not fake_container.settings.server.admin_api
    with running(create_app(container=fake_container)) as url:
        for method, path in [
            ("GET", "/v1/admin/documents"),
            ("GET", "/v1/admin/ingest/jobs"),
            ("POST", "/v1/admin/ingest/jobs"),
            ("POST", "/v1/admin/ingest/uploads"),
            ("DELETE", "/v1/admin/documents/abc"),
        ]:
            response = httpx.request(method, url + path, json={"paths": ["/"]} if method == "POST" else None)
            assert response.status_code == 404, (method, path)
        paths = httpx.get(url + "/openapi.json").json()["paths"]
        # The feedback view is the one admin route that is always there (serving.conversations_api).
        assert not any(p.startswith("/v1/admin") for p in paths if p != "/v1/admin/feedback")


def test_path_job_progress_documents_rerun_and_busy_delete(tmp_path, docs):
    container = admin_container(tmp_path, admin_paths=[str(docs)])
    with (
        running(create_app(container=container)) as url,
        httpx.Client(base_url=url, timeout=30, headers=auth("admin")) as client,
    ):
        schema = client.get("/openapi.json").json()
        assert "/v1/admin/ingest/jobs/{job_id}" in schema["paths"] and "JobModel" in schema["components"]["schemas"]

        submitted = client.post("/v1/admin/ingest/jobs", json={"paths": [str(docs)], "acl": ["group:staff"]})
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        assert submitted.headers["location"] == f"/v1/admin/ingest/jobs/{job_id}"
        assert submitted.json()["kind"] == "paths" and submitted.json()["acl"] == ["group:staff"]

        job = wait_job(client, job_id)
        assert job["state"] == "succeeded", job
        assert job["total_files"] == 3 and job["files_done"] == 3 and job["error"] is None
        assert job["counts"] == {"added": 2, "updated": 0, "unchanged": 0, "removed": 0, "failed": 1}
        by_name = {Path(f["path"]).name: f for f in job["files"]}
        assert by_name["handbook.md"]["embedded"] > 1 and by_name["notes.txt"]["embedded"] == 1
        assert job["chunks_embedded"] == sum(f["embedded"] for f in job["files"]) > 2
        assert job["rate_chunks_per_s"] > 0 and job["eta_s"] == 0.0 and job["started_at"] and job["finished_at"]
        bad = by_name["empty.txt"]
        assert bad["status"] == "failed" and bad["code"] == "empty_document" and "empty" in bad["error"]

        listed = client.get("/v1/admin/documents").json()
        assert listed["count"] == 3
        statuses = {Path(d["path"]).name: d["status"] for d in listed["documents"]}
        assert statuses == {"handbook.md": "indexed", "notes.txt": "indexed", "empty.txt": "failed"}
        indexed = client.get("/v1/admin/documents", params={"status": "indexed"}).json()
        assert indexed["count"] == 2 and all(d["acl"] == ["group:staff"] for d in indexed["documents"])
        doc = client.get(f"/v1/admin/documents/{by_name['handbook.md']['doc_id']}").json()
        assert doc["chunk_count"] == by_name["handbook.md"]["chunks"] and doc["title"] == "Employee handbook"
        assert client.get("/v1/admin/documents", params={"status": "bogus"}).status_code == 400

        again = wait_job(client, client.post("/v1/admin/ingest/jobs", json={"paths": [str(docs)]}).json()["id"])
        assert again["state"] == "succeeded" and again["chunks_embedded"] == 0
        assert again["counts"]["unchanged"] == 2 and again["counts"]["failed"] == 1  # the empty file fails again
        jobs = client.get("/v1/admin/ingest/jobs").json()
        assert jobs["count"] == 2 and [j["id"] for j in jobs["jobs"]] == [again["id"], job_id]
        assert "files" not in jobs["jobs"][0]

        with WriterLock(container.settings.data_dir, "test"):  # another process writing: 409, nothing hangs
            busy = client.delete(f"/v1/admin/documents/{doc['doc_id']}")
        assert busy.status_code == 409 and busy.json()["code"] == "store_busy"
        assert "another writer" in busy.json()["detail"]
        assert client.get(f"/v1/admin/documents/{doc['doc_id']}").status_code == 200


def test_server_side_paths_outside_admin_paths_are_refused(tmp_path, docs):
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "salaries.md").write_text("# Salaries\n\nConfidential.\n")
    (docs / "sneaky").symlink_to(outside, target_is_directory=True)
    container = admin_container(tmp_path, admin_paths=[str(docs)])
    with running(create_app(container=container)) as url, httpx.Client(base_url=url, headers=auth("admin")) as client:
        for path in [outside, docs / "sneaky", docs / ".." / "secret" / "salaries.md"]:
            refused = client.post("/v1/admin/ingest/jobs", json={"paths": [str(path)]})
            assert refused.status_code == 403, path
            assert refused.json()["code"] == "path_not_allowed"
            assert "add the folder to server.admin_paths" in refused.json()["detail"]
        missing = client.post("/v1/admin/ingest/jobs", json={"paths": [str(docs / "nope.md")]})
        assert missing.status_code == 400 and str(docs / "nope.md") in missing.json()["detail"]
        assert client.post("/v1/admin/ingest/jobs", json={"paths": []}).status_code == 400
        assert client.get("/v1/admin/ingest/jobs").json()["count"] == 0

        (docs / "pay.md").symlink_to(outside / "salaries.md")  # a link inside an allowed folder: the job refuses
        job = client.post("/v1/admin/ingest/jobs", json={"paths": [str(docs)]}).json()
        job = wait_job(client, job["id"])
        assert job["state"] == "failed" and job["error_code"] == "path_not_allowed", job
        assert str((outside / "salaries.md").resolve()) in job["error"] and "server.admin_paths" in job["error"]
        assert client.get("/v1/admin/documents").json()["count"] == 0

    closed = admin_container(tmp_path / "closed")
    with running(create_app(container=closed)) as url:
        refused = httpx.post(url + "/v1/admin/ingest/jobs", json={"paths": [str(docs)]}, headers=auth("admin"))
        assert refused.status_code == 403 and "server.admin_paths" in refused.json()["detail"]
        assert "no folder is allowed" in refused.json()["detail"]


def test_upload_job_limits_sanitising_and_document_deletion(tmp_path):
    container = admin_container(tmp_path, max_upload_mb=0.001)  # 1048 bytes
    data_dir = container.settings.data_dir
    with (
        running(create_app(container=container)) as url,
        httpx.Client(base_url=url, timeout=30, headers=auth("admin")) as client,
    ):
        files = [
            (
                "files",
                ("guide.md", b"# Guide\n\nPrinters are on the second floor near the kitchen.\n", "text/markdown"),
            ),
            ("files", ("scan.pdf", b"this is not a PDF at all", "application/pdf")),
            ("files", ("../../evil.md", b"# Zebras\n\nZebras graze in the savanna at dawn.\n", "text/markdown")),
        ]
        submitted = client.post("/v1/admin/ingest/uploads", files=files, data={"acl": "group:hr, group:it"})
        assert submitted.status_code == 202, submitted.text
        assert submitted.json()["kind"] == "upload" and submitted.json()["acl"] == ["group:hr", "group:it"]
        job = wait_job(client, submitted.json()["id"])
        assert job["state"] == "succeeded", job
        folder = (data_dir / "uploads" / job["id"]).resolve()
        by_name = {Path(f["path"]).name: f for f in job["files"]}
        assert set(by_name) == {"guide.md", "scan.pdf", "evil.md"}
        assert all(Path(f["path"]).parent == folder for f in job["files"])
        assert not (data_dir / "evil.md").exists() and not (tmp_path / "evil.md").exists()
        assert by_name["guide.md"]["status"] == "added" and by_name["evil.md"]["status"] == "added"
        assert by_name["scan.pdf"]["status"] == "failed" and by_name["scan.pdf"]["error"]

        too_big = client.post("/v1/admin/ingest/uploads", files=[("files", ("big.md", b"x" * 2000, "text/markdown"))])
        assert too_big.status_code == 413 and too_big.json()["code"] == "upload_too_large"
        assert "0.001 MB" in too_big.json()["detail"] and "server.max_upload_mb" in too_big.json()["detail"]
        dotdot = client.post("/v1/admin/ingest/uploads", files=[("files", ("..", b"hello", "text/plain"))])
        assert dotdot.status_code == 400
        assert [p.name for p in (data_dir / "uploads").iterdir()] == [job["id"]]  # refused uploads leave nothing

        zebra_doc = by_name["evil.md"]["doc_id"]
        record = client.get(f"/v1/admin/documents/{zebra_doc}").json()
        assert record["acl"] == ["group:hr", "group:it"] and record["status"] == "indexed"

        def zebra_chunks() -> list[str]:
            chunks = container.retriever.retrieve("zebras savanna", 5, identity=Identity.of("ann", ["it"]))
            return [c.id for c in chunks if c.metadata["doc_id"] == zebra_doc]

        assert zebra_chunks()
        # The caller's key is their identity: root (group it) sees the document, bob (engineering) does not.
        mine = client.post("/v1/retrieve", json={"query": "zebras savanna", "top_k": 5}).json()["chunks"]
        assert zebra_doc in {c["metadata"]["doc_id"] for c in mine}
        bobs = client.post("/v1/retrieve", json={"query": "zebras savanna", "top_k": 5}, headers=auth("bob"))
        assert zebra_doc not in {c["metadata"]["doc_id"] for c in bobs.json()["chunks"]}
        deleted = client.delete(f"/v1/admin/documents/{zebra_doc}")
        assert deleted.status_code == 200 and deleted.json()["doc_id"] == zebra_doc
        assert zebra_doc not in {d["doc_id"] for d in client.get("/v1/admin/documents").json()["documents"]}
        assert not zebra_chunks()
        assert not (folder / "evil.md").exists() and (folder / "guide.md").exists()  # its upload went with it
        gone = client.delete(f"/v1/admin/documents/{zebra_doc}")
        assert gone.status_code == 404 and gone.headers["content-type"] == "application/problem+json"
        assert client.get("/v1/admin/documents/0000").status_code == 404
        assert client.get("/v1/admin/ingest/jobs/nope").json()["code"] == "not_found"


def test_job_fails_clearly_while_another_writer_holds_the_store(tmp_path, docs):
    container = admin_container(tmp_path, admin_paths=[str(docs)])
    with running(create_app(container=container)) as url, httpx.Client(base_url=url, headers=auth("admin")) as client:
        with WriterLock(container.settings.data_dir, "ingest"):
            job = wait_job(client, client.post("/v1/admin/ingest/jobs", json={"paths": [str(docs)]}).json()["id"])
        assert job["state"] == "failed" and job["error_code"] == "store_busy"
        assert "another writer" in job["error"] and job["files"] == []


def raw_upload_head(url: str, headers: dict[str, str], length: int | None) -> tuple[socket.socket, bytes]:
    """A socket that has sent an upload's request head, and the multipart opening of a file part."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    lines = [
        "POST /v1/admin/ingest/uploads HTTP/1.1",
        f"Host: {host}",
        "Content-Type: multipart/form-data; boundary=XyZ",
        framing,
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    opening = b'--XyZ\r\nContent-Disposition: form-data; name="files"; filename="big.md"\r\n\r\n'
    return sock, opening


def read_response(sock: socket.socket, within: float = 5.0) -> tuple[int, dict, dict]:
    """Status, headers and JSON body of one response; fails if it has not come within ``within`` seconds."""
    reader = sock.makefile("rb")
    sock.settimeout(within)
    try:
        status = int(reader.readline().split()[1])
        headers = {}
        while (line := reader.readline().strip()) != b"":
            name, _, value = line.decode().partition(":")
            headers[name.lower()] = value.strip()
        body = json.loads(reader.read(int(headers["content-length"])))
    except TimeoutError:
        raise AssertionError(f"no answer within {within:.0f} s: the server waits for the whole body") from None
    return status, headers, body


def test_uploads_check_the_key_before_the_body_and_cap_files_as_they_stream(tmp_path):
    container = admin_container(tmp_path, max_upload_mb=1, auth_failure_limit="3/minute")
    with running(create_app(container=container)) as url:
        # 30 MB announced, 256 KB sent: the caller's key is checked on the headers, before the body is read.
        for headers, status, code in [({}, 401, "invalid_api_key"), (auth("alice"), 403, "admin_only")]:
            sock, opening = raw_upload_head(url, headers, 30 * 1024 * 1024)
            with sock:
                sock.sendall(opening + b"x" * 256 * 1024)
                got, got_headers, body = read_response(sock)
            assert (got, body["code"]) == (status, code), body
            assert got_headers["content-type"] == "application/problem+json"
        # Requests without a valid key are rate-limited per address (server.auth_failure_limit: 3/minute).
        refusals = [
            httpx.post(url + "/v1/admin/ingest/uploads", files=[("files", ("a.md", b"# A\n\nText.\n"))], headers=h)
            for h in ({"Authorization": "Bearer rag-guess"}, {}, {})
        ]
        assert [r.status_code for r in refusals] == [401, 401, 429], [r.text for r in refusals]  # the 4th refusal
        assert refusals[2].json()["code"] == "rate_limited" and int(refusals[2].headers["retry-after"]) >= 1
        assert "server.auth_failure_limit" in refusals[2].json()["detail"]
        assert httpx.get(url + "/v1/admin/documents", headers=auth("admin")).status_code == 200  # a valid key works

        # An admin's file over max_upload_mb, chunked (no length to check): refused once 1 MB of it has arrived.
        sock, opening = raw_upload_head(url, auth("admin"), None)
        with sock:
            piece = b"x" * 64 * 1024
            sent = 0
            for chunk in [opening, *[piece] * 48]:  # 3 MB in all
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                if select.select([sock], [], [], 0.05)[0]:
                    break
            got, _, body = read_response(sock)
        assert got == 413 and body["code"] == "upload_too_large", body
        assert "big.md" in body["detail"] and "1 MB" in body["detail"] and "server.max_upload_mb" in body["detail"]
        assert sent < 2 * 1024 * 1024, f"the server took {sent:,} bytes of a file capped at 1 MB before refusing"
    assert not (container.settings.data_dir / "uploads").exists() or not any(
        (container.settings.data_dir / "uploads").iterdir()
    )


# -- the job manager's rules, with a stub service ---------------------------------------------------------------


class StubService:
    """Reports one file, then blocks until released or cancelled, then reports the second."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.deleted: list[str] = []
        self.registry = SimpleNamespace(document=lambda doc_id: DocumentRecord(doc_id, f"/docs/{doc_id}", "indexed"))

    def close(self) -> None:
        pass

    def ingest_paths(
        self, paths, progress=None, *, acl=None, tags=None, prune=False, cancel=None, on_total=None, roots=None
    ):  # noqa: ANN001, ANN201, E501
        on_total(2)
        first = FileResult(Path("a.md"), "added", chunks=4, embedded=4, doc_id="a")
        progress(first)
        self.started.set()
        while not (self.release.is_set() or cancel.is_set()):
            time.sleep(0.01)
        report = IngestReport(files=[first], total=2, seconds=0.1)
        if not cancel.is_set():
            second = FileResult(Path("b.md"), "added", chunks=4, embedded=4, doc_id="b")
            progress(second)
            report.files.append(second)
        return report

    def delete_document(self, doc_id: str) -> DocumentRecord:
        self.deleted.append(doc_id)
        return DocumentRecord(doc_id, f"/docs/{doc_id}", "indexed")


@pytest.fixture
def stub_jobs(tmp_path):
    settings = load_settings(data_dir=tmp_path / "data", server={"admin_paths": [str(tmp_path)]})
    service = StubService()
    manager = JobManager(SimpleNamespace(settings=settings), service=service, delete_wait_s=0.3)
    yield manager, service
    service.release.set()
    manager.shutdown()


def test_live_progress_cancel_and_deletions_wait_for_the_running_job(stub_jobs, tmp_path):
    manager, service = stub_jobs
    first = manager.submit_paths([tmp_path])
    second = manager.submit_paths([tmp_path], acl=[" group:a ", "group:a", "user:b"])
    assert service.started.wait(10)
    live = manager.snapshot(first)
    assert live["state"] == "running" and live["total_files"] == 2 and live["files_done"] == 1
    assert live["chunks_embedded"] == 4 and live["rate_chunks_per_s"] > 0 and live["eta_s"] is not None
    assert manager.snapshot(second)["acl"] == ["group:a", "user:b"]

    assert manager.cancel(second.id).state == "cancelled"  # queued: at once
    with pytest.raises(StoreBusyError, match=first.id):  # deletions queue behind the running job, then give up
        manager.delete_document("x")
    assert service.deleted == []

    manager.cancel(first.id)
    deadline = time.monotonic() + 10
    while manager.get(first.id).state == "running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    done = manager.snapshot(first)
    assert done["state"] == "cancelled" and done["cancel_requested"] and done["files_done"] == 1
    assert manager.delete_document("y").doc_id == "y" and service.deleted == ["y"]


def test_history_keeps_the_last_jobs_and_shutdown_cancels_queued_ones(stub_jobs, tmp_path):
    manager, service = stub_jobs
    service.release.set()
    ids = [manager.submit_paths([tmp_path]).id for _ in range(MAX_JOBS + 5)]
    deadline = time.monotonic() + 20
    while any(not j.finished for j in manager.list()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    manager.submit_paths([tmp_path])
    kept = [j.id for j in manager.list()]
    assert len(kept) == MAX_JOBS and ids[0] not in kept and ids[-1] in kept

    service.release.clear()
    service.started.clear()
    running_job = manager.submit_paths([tmp_path])
    queued = manager.submit_paths([tmp_path])
    assert service.started.wait(10)
    manager.shutdown()
    assert manager.get(queued.id).state == "cancelled" and manager.get(running_job.id).state == "cancelled"
    with pytest.raises(Exception, match="shutting down"):
        manager.submit_paths([tmp_path])


def test_safe_filename():
    assert safe_filename("../../evil.md") == "evil.md"
    assert safe_filename("C:\\Users\\me\\report.pdf") == "report.pdf"
    assert safe_filename("a\x00b.txt") == "ab.txt"
    for bad in ["", "..", ".", "dir/", "../..", None]:
        with pytest.raises(InvalidRequestError):
            safe_filename(bad)


def test_an_empty_acl_is_refused_and_no_acl_means_ingest_default_access(tmp_path, docs):
    container = admin_container(tmp_path, admin_paths=[str(docs)])
    with (
        running(create_app(container=container)) as url,
        httpx.Client(base_url=url, timeout=30, headers=auth("admin")) as client,
    ):
        empty = client.post("/v1/admin/ingest/jobs", json={"paths": [str(docs)], "acl": []})
        assert empty.status_code == 400 and "ACL is empty" in empty.json()["detail"]
        blank = client.post(
            "/v1/admin/ingest/uploads", files=[("files", ("a.md", b"# A\n\nText.\n"))], data={"acl": " "}
        )
        assert blank.status_code == 400 and "ACL is empty" in blank.json()["detail"]
        assert client.get("/v1/admin/ingest/jobs").json()["count"] == 0  # nothing queued

        upload = [("files", ("guide.md", b"# Guide\n\nPrinters are on the second floor.\n", "text/markdown"))]
        uploaded = wait_job(client, client.post("/v1/admin/ingest/uploads", files=upload).json()["id"])
        job = wait_job(
            client, client.post("/v1/admin/ingest/jobs", json={"paths": [str(docs / "notes.txt")]}).json()["id"]
        )
        for done in (uploaded, job):
            assert done["state"] == "succeeded" and done["acl"] is None, done
            record = client.get(f"/v1/admin/documents/{done['files'][0]['doc_id']}").json()
            assert record["acl"] == ["group:admins"]  # ingest.default_access: not public
