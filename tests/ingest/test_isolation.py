"""Each file is parsed in a worker process under a time and a memory limit: a hang, a crash or a memory bomb
fails that one file with a clear reason, and every good file still lands."""

from pathlib import Path

import pytest

from ingest.pipeline import IngestService
from ingest.workers import ParsePool
from rag.errors import StoreBusyError
from rag.locking import WriterLock
from rag.settings import IngestSettings
from rag.store import ChromaStore
from tests.fakes import HashEmbedder

EVIL = "tests.ingest.evil_parser:read_document"


def test_hang_crash_and_memory_bomb_fail_alone(fake_settings, tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("good-1.txt", "good-2.txt", "good-3.txt"):  # plain text: no slow parser import in the worker
        (docs / name).write_text(f"The canteen serves {name} soup on Mondays.\n")
    for name in ("hang.md", "segfault.md", "exit.md", "bomb.md", "bug.md"):
        (docs / name).write_text("# trap\n\nnever read\n")
    settings = IngestSettings(parse_workers=2, parse_timeout_s=8, parse_memory_mb=1024)
    store = ChromaStore(fake_settings.data_dir / "chroma", "test")
    service = IngestService(HashEmbedder(), store, fake_settings.chunking, settings, parser=EVIL)
    report = service.ingest_paths([docs])
    reasons = {f.path.name: f.error for f in report.failed}
    assert set(reasons) == {"hang.md", "segfault.md", "exit.md", "bomb.md", "bug.md"}
    assert "longer than 8 s" in reasons["hang.md"] and "parse_timeout_s" in reasons["hang.md"]
    assert "crashed (signal 11" in reasons["segfault.md"]
    assert "crashed (exit code 3" in reasons["exit.md"]
    assert "more than 1024 MB" in reasons["bomb.md"]
    assert "parser failed" in reasons["bug.md"] and "ZeroDivisionError" in reasons["bug.md"]
    assert report.count("added") == 3
    failed = {r.path.rsplit("/", 1)[-1]: r for r in store.docstore.documents("failed")}
    assert set(failed) == set(reasons) and all(r.error for r in failed.values())


def test_pool_replaces_dead_workers_and_keeps_going(tmp_path: Path):
    files = []
    for i in range(4):
        good = tmp_path / f"ok-{i}.txt"
        good.write_text(f"line {i}")
        crash = tmp_path / f"exit-{i}.txt"
        crash.write_text("x")
        files += [crash, good]
    pool = ParsePool(workers=1, timeout_s=30, memory_mb=1024, parser=EVIL)
    outcomes = {o.path.name: o for o in pool.parse(files)}
    assert len(outcomes) == 8
    assert all(outcomes[f"ok-{i}.txt"].document.sections[0].text == f"line {i}" for i in range(4))
    assert all(outcomes[f"exit-{i}.txt"].error is not None for i in range(4))


def test_a_second_writer_gets_a_clear_error_not_a_hang(fake_settings, tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\ntext\n")
    service = IngestService(
        HashEmbedder(),
        ChromaStore(fake_settings.data_dir / "chroma", "test"),
        fake_settings.chunking,
        fake_settings.ingest,
    )
    with WriterLock(fake_settings.data_dir, "test holder"):
        with pytest.raises(StoreBusyError) as caught:
            service.ingest_paths([docs])
    assert "another writer holds the store" in caught.value.message and "test holder" in caught.value.message
    assert service.ingest_paths([docs]).count("added") == 1  # released: the next run goes ahead


def test_a_job_full_of_bad_files_finishes_and_every_good_file_lands(fake_settings, tmp_path: Path):
    """Bad input through the whole pipeline (real parsers in real workers): each gets its own reason."""
    from tests.fixtures import makers

    docs = tmp_path / "docs"
    docs.mkdir()
    makers.make_docx(docs / "report.docx")
    makers.make_xlsx(docs / "budget.xlsx")
    makers.make_eml(docs / "note.eml")
    makers.make_text_pdf(docs / "handbook.pdf", ["Staff get 26 days of leave.", "Travel is booked in TripDesk."])
    (docs / "good.md").write_text("# Good\n\nThe canteen opens at noon.\n")
    makers.make_zip_bomb_docx(docs / "bomb.docx")
    makers.make_encrypted_pdf(docs / "locked.pdf", "s3cret")
    makers.make_corrupt_office(docs / "broken.pptx")
    (docs / "empty.txt").write_bytes(b"")
    (docs / "garbage.txt").write_bytes(bytes(range(256)) * 40)
    (docs / "huge.csv").write_text("a,b\n" + "1,2\n" * 400_000)  # ~1.6 MB: over the 1 MB cap below
    settings = IngestSettings(max_file_mb=1)
    store = ChromaStore(fake_settings.data_dir / "chroma", "test")
    report = IngestService(HashEmbedder(), store, fake_settings.chunking, settings).ingest_paths([docs])
    reasons = {f.path.name: f.error for f in report.failed}
    assert set(reasons) == {"bomb.docx", "locked.pdf", "broken.pptx", "empty.txt", "garbage.txt", "huge.csv"}
    assert "zip bomb" in reasons["bomb.docx"] or "unpacked" in reasons["bomb.docx"]
    assert "encrypted" in reasons["locked.pdf"]
    assert "empty" in reasons["empty.txt"] and "binary" in reasons["garbage.txt"]
    assert "over the 1 MB limit" in reasons["huge.csv"] and "max_file_mb" in reasons["huge.csv"]
    assert {f.path.name for f in report.files if f.status == "added"} == {
        "report.docx",
        "budget.xlsx",
        "note.eml",
        "handbook.pdf",
        "good.md",
    }
    assert {r.doc_type for r in store.docstore.documents("indexed")} == {"docx", "xlsx", "eml", "pdf", "markdown"}


def test_the_lock_tells_when_the_previous_writer_died(tmp_path: Path):
    with WriterLock(tmp_path) as lock:
        assert not lock.previous_holder_died
    with WriterLock(tmp_path) as lock:
        assert not lock.previous_holder_died  # released cleanly
    (tmp_path / "writer.owner.json").write_text('{"pid": 1}')  # what a kill -9 leaves behind
    with WriterLock(tmp_path) as lock:
        assert lock.previous_holder_died


HOLD_STORE = """
import sys
from rag.store import ChromaStore
store = ChromaStore(sys.argv[1], "test")
store.count()
print("holding", flush=True)
sys.stdin.readline()
"""


def test_one_process_per_embedded_store(tmp_path: Path):
    """Embedded Chroma is not safe for two processes on one path: the second one is refused, naming the first."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    path = tmp_path / "chroma"
    mine, again = ChromaStore(path, "test"), ChromaStore(path, "test")
    assert mine.count() == again.count() == 0  # one process may open it many times
    mine.close()
    assert again.count() == 0  # still held by the other user in this process
    again.close()

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_STORE, str(path)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(StoreBusyError) as caught:
            ChromaStore(path, "test").count()
        assert "open in another process" in caught.value.message and f"pid {holder.pid}" in caught.value.message
        assert "admin API" in caught.value.message
    finally:
        holder.communicate("done\n", timeout=60)
    assert ChromaStore(path, "test").count() == 0  # the holder exited: free again
    assert json.loads((path / "store.owner.json").read_text())["pid"] == os.getpid()
