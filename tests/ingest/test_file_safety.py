"""Hostile or odd files around an ingest: symlinked ACL sidecars, looping links, names at the length limit, huge
text, crashing parsers that print. Each fails alone with a one-line reason that never quotes another file."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from ingest.chunking import Chunker
from ingest.document import ParsedDocument, Section
from ingest.jobs import JobManager
from ingest.pipeline import IngestService
from rag.settings import IngestSettings
from rag.store import ChromaStore
from tests.fakes import HashEmbedder
from tests.serving.test_admin_api import admin_container

SECRET = "Merger codename BLUEFINCH closes in March"


def run_job(manager: JobManager, job) -> dict:  # noqa: ANN001 - Job
    deadline = time.monotonic() + 60
    while not manager.get(job.id).finished:
        assert time.monotonic() < deadline, manager.snapshot(job)
        time.sleep(0.05)
    return manager.snapshot(job)


def test_a_symlinked_sidecar_cannot_read_outside_admin_paths(tmp_path: Path):
    docs, other = tmp_path / "docs", tmp_path / "other-group"
    docs.mkdir()
    other.mkdir()
    (other / "plan.txt").write_text(SECRET + "\n")
    (docs / "a.txt").write_text("Holidays are booked in the portal.\n")
    os.symlink(other / "plan.txt", docs / "a.txt.acl")  # another group's document as "ACL"
    (docs / "b.txt").write_text("The canteen opens at noon.\n")
    os.symlink("/etc/hostname" if Path("/etc/hostname").exists() else "/etc/passwd", docs / "b.txt.acl")
    (docs / "c.txt").write_text("Parking is free on Fridays.\n")
    (docs / "c.txt.acl").write_text("group:staff\n")
    container = admin_container(tmp_path, admin_paths=[str(docs)])
    manager = JobManager(container)
    try:
        job = run_job(manager, manager.submit_paths([docs]))
    finally:
        manager.shutdown()
    files = {Path(f["path"]).name: f for f in job["files"]}
    assert job["state"] == "succeeded" and files["c.txt"]["status"] == "added"
    for name in ("a.txt", "b.txt"):
        assert files[name]["status"] == "failed" and files[name]["code"] == "acl_invalid"
        assert "links outside server.admin_paths" in files[name]["error"]
    hostname = Path("/etc/hostname").read_text().strip() if Path("/etc/hostname").exists() else "root:"
    text = str(job) + str([r.error for r in container.store.docstore.documents()])
    assert "BLUEFINCH" not in text and hostname not in text
    assert container.store.docstore.document(files["c.txt"]["doc_id"]).acl == ["group:staff"]


def test_upload_names_at_the_length_limit_do_not_fail_the_job(tmp_path: Path):
    container = admin_container(tmp_path)
    manager = JobManager(container)
    long_name = "n" * 251 + ".txt"  # 255 bytes: <name>.acl cannot exist beside it
    parts = [
        (long_name, b"Travel is booked in TripDesk."),
        (long_name, b"Expenses are filed within 30 days."),  # same name again: numbered, still <= 255 bytes
        ("ok.txt", b"Parking is free on Fridays."),
    ]
    try:
        job = run_job(manager, manager.submit_upload(parts))
    finally:
        manager.shutdown()
    assert job["state"] == "succeeded", job["error"]
    assert [f["status"] for f in job["files"]] == ["added"] * 3
    assert all(len(Path(f["path"]).name.encode()) <= 255 for f in job["files"])


def test_uploads_and_the_registry_are_private(tmp_path: Path):
    container = admin_container(tmp_path)
    manager = JobManager(container)
    try:
        job = run_job(manager, manager.submit_upload([("pay.txt", b"Payroll runs on the 25th.")]))
    finally:
        manager.shutdown()
    upload = Path(job["files"][0]["path"])
    registry = container.store.docstore.path
    for path in (upload, registry, Path(f"{registry}-wal")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(upload.parent.stat().st_mode) == 0o700


def test_an_existing_world_readable_registry_is_made_private(tmp_path: Path):
    from rag.docstore import DocStore

    path = tmp_path / "docstore.sqlite3"
    DocStore(path).set_meta("k", "v")
    os.chmod(path, 0o644)
    store = DocStore(path)
    assert store.get_meta("k") == "v"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_world_readable_keys_file_is_warned_about(tmp_path: Path, caplog):
    from serving.auth import read_keys_file

    keys = tmp_path / "api_keys.yaml"
    keys.write_text("keys: []\n")
    os.chmod(keys, 0o644)
    with caplog.at_level("WARNING"):
        read_keys_file(keys)
    assert any("readable by other users" in r.message and "chmod 600" in r.message for r in caplog.records)
    caplog.clear()
    os.chmod(keys, 0o600)
    read_keys_file(keys)
    assert not caplog.records


def test_looping_and_dangling_links_are_listed_with_a_reason(fake_settings, tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.txt").write_text("The canteen serves soup on Mondays.\n")
    os.symlink(docs / "loop.txt", docs / "loop.txt")
    os.symlink(docs / "gone.md", docs / "dangling.md")
    store = ChromaStore(fake_settings.data_dir / "chroma", "test")
    service = IngestService(HashEmbedder(), store, fake_settings.chunking, fake_settings.ingest)
    try:
        report = service.ingest_paths([docs])
    finally:
        service.close()
    reasons = {f.path.name: f.error for f in report.failed}
    assert set(reasons) == {"loop.txt", "dangling.md"} and report.count("added") == 1
    assert "loops back on itself" in reasons["loop.txt"] and "does not exist" in reasons["dangling.md"]
    assert all(f.code == "broken_link" for f in report.failed)


def test_a_huge_section_is_tokenised_piece_by_piece():
    """The splitter tokenises a block whole before splitting it: a 120 MB text asked the tokenizer for 2 GB at
    once. No call may see more than a bounded piece (ingest.chunking.MAX_PIECE_CHARS)."""
    seen: list[int] = []

    def tokenize(text: str) -> list[int]:
        seen.append(len(text))
        return [hash(w) % 30000 for w in text.split()]

    words = [f"w{i}" for i in range(60_000)]
    text = "\n\n".join(" ".join(words[i : i + 100]) + "." for i in range(0, len(words), 100))
    assert len(text) > 300_000
    chunker = Chunker(tokenize, 200, 20)
    records = chunker.chunk(ParsedDocument("Big", [Section(text)], "text"), doc_id="d", source="s", file_hash="h")
    assert max(seen) <= 100_000
    found = set(" ".join(r.text for r in records).replace(".", " ").split())
    assert found >= set(words)  # nothing lost at the cuts


def test_a_crashing_parser_s_output_goes_to_a_log_file_not_the_terminal(fake_settings, tmp_path: Path, capfd):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "noisy.txt").write_text("x\n")
    (docs / "fine.txt").write_text("The canteen serves soup on Mondays.\n")
    store = ChromaStore(fake_settings.data_dir / "chroma", "test")
    settings = IngestSettings(parse_workers=1)
    service = IngestService(
        HashEmbedder(), store, fake_settings.chunking, settings, parser="tests.ingest.evil_parser:noisy_abort"
    )
    try:
        report = service.ingest_paths([docs])
    finally:
        service.close()
    [failed] = report.failed
    log = fake_settings.data_dir / "logs" / "parse-workers.log"
    assert "crashed (signal 6" in failed.error and str(log) in failed.error
    assert report.count("added") == 1
    assert "NOISY-MARKER" in log.read_text() and "NOISY-MARKER" not in capfd.readouterr().err
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
