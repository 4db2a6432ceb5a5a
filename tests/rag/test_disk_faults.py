"""A full or read-only disk: one line with the fix, nothing stored is lost, and the next run recovers.

Faults are injected for real where that is cheap and always possible (SQLite's ``max_page_count`` makes its writes
fail with SQLITE_FULL, exactly as a full disk does); a small tmpfs inside ``unshare -m`` and a read-only data dir
check the whole path when this machine allows it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.pipeline import IngestService
from rag.docstore import DocStore
from rag.errors import StoreError
from rag.store import ChromaStore
from tests.fakes import HashEmbedder
from tests.serving.server import free_port

REPO = Path(__file__).resolve().parents[2]


def fill_up(store: DocStore, spare_pages: int = 2) -> None:
    """Cap the registry just above its current size: the next sizeable write fails with SQLITE_FULL."""
    pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
    store.conn.execute(f"PRAGMA max_page_count = {pages + spare_pages}")


def write_docs(folder: Path, count: int, paragraphs: int = 40) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        body = "\n\n".join(
            f"Document {i} paragraph {p}: " + " ".join(f"word{i}x{p}x{w}" for w in range(40)) + "."
            for p in range(paragraphs)
        )
        (folder / f"doc-{i:02}.txt").write_text(body)


def test_a_full_registry_says_so_instead_of_cannot_rollback(tmp_path: Path):
    store = DocStore(tmp_path / "docstore.sqlite3")
    store.set_meta("embedder", "x")
    fill_up(store)
    with pytest.raises(StoreError) as caught:
        store.put_chunks([(f"c{i}", "d", "text " * 2000, "text") for i in range(50)])
    assert (
        caught.value.code == "disk_full"
        and "is full" in caught.value.message
        and "free some space" in caught.value.message
    )
    assert "\n" not in caught.value.message
    assert store.get_meta("embedder") == "x"  # what was committed before stays
    store.conn.execute("PRAGMA max_page_count = 1073741823")
    store.put_chunks([("c1", "d", "text", "text")])  # the same connection works again once there is room
    assert store.chunk_ids("d") == {"c1"}


def test_a_full_disk_mid_ingest_stops_with_one_line_and_the_next_run_recovers(fake_settings, tmp_path: Path):
    docs = tmp_path / "docs"
    write_docs(docs, 6)
    store = ChromaStore(fake_settings.data_dir / "chroma", "test")
    service = IngestService(HashEmbedder(), store, fake_settings.chunking, fake_settings.ingest)
    try:
        service.check_embedder()
        fill_up(store.docstore, spare_pages=8)
        with pytest.raises(StoreError) as caught:
            service.ingest_paths([docs])
        assert caught.value.code == "disk_full" and "run it again" in caught.value.message
        store.docstore.conn.execute("PRAGMA max_page_count = 1073741823")  # space freed
        report = service.ingest_paths([docs])  # the same process (a server's next job)
    finally:
        service.close()
    assert report.ok and report.count("added") + report.count("updated") == 6, report.summary()
    records = store.docstore.documents()
    assert len(records) == 6 and {r.status for r in records} == {"indexed"}
    assert sum(r.chunk_count for r in records) == store.count() == len(store.docstore.chunk_ids())


def _can_mount() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0


SMALL_DISK_RUN = """
import subprocess, sys
from pathlib import Path
from ingest.pipeline import IngestService
from rag.errors import StoreError
from rag.settings import load_settings
from rag.store import ChromaStore
from tests.fakes import HashEmbedder
mount, docs = Path(sys.argv[1]), Path(sys.argv[2])
settings = load_settings(data_dir=mount / "data", chunking={"chunk_tokens": 60, "overlap_tokens": 8})
store = ChromaStore(settings.data_dir / "chroma", "test")
service = IngestService(HashEmbedder(), store, settings.chunking, settings.ingest)
try:
    service.ingest_paths([docs])
    print("FIRST: no error")
except StoreError as exc:
    print("FIRST:", exc.code, exc.message)
subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
report = service.ingest_paths([docs])
print("SECOND:", report.ok, sorted({r.status for r in store.docstore.documents()}), len(store.docstore.documents()))
service.close()
"""


@pytest.mark.slow
@pytest.mark.skipif(not _can_mount(), reason="needs root and `unshare -m` to mount a small tmpfs")
def test_a_really_full_filesystem_during_ingest(tmp_path: Path):
    docs, mount = tmp_path / "docs", tmp_path / "small"
    write_docs(docs, 30, paragraphs=150)
    mount.mkdir()
    script = tmp_path / "run.py"
    script.write_text(SMALL_DISK_RUN)
    command = f"mount -t tmpfs -o size=4m tmpfs {mount} && {sys.executable} {script} {mount} {docs}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(["unshare", "-m", "sh", "-c", command], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    first = next(line for line in done.stdout.splitlines() if line.startswith("FIRST:"))
    assert first.startswith("FIRST: disk_full the disk holding") and "free some space" in first, done.stdout
    assert "SECOND: True ['indexed'] 30" in done.stdout, done.stdout + done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def _serve(data_dir: Path, port: int, read_only: bool) -> subprocess.Popen:
    command = [sys.executable, "-m", "serving.cli", "--data-dir", str(data_dir), "serve", "--port", str(port)]
    if read_only and os.geteuid() == 0:  # root writes through permission bits: a read-only bind mount instead
        inner = " ".join(command)
        command = ["unshare", "-m", "sh", "-c", f"mount --bind -o ro {data_dir} {data_dir} && exec {inner}"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAG_SERVER__AUDIT_LOG": "true"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() == 0 and not _can_mount(), reason="as root, needs `unshare -m` for a read-only mount")
def test_serve_on_a_read_only_data_dir_says_why_and_starts_once_fixed(tmp_path: Path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if os.geteuid() != 0:
        data_dir.chmod(0o555)
    server = _serve(data_dir, free_port(), read_only=True)
    try:
        _, err = server.communicate(timeout=120)
    finally:
        server.kill()
        data_dir.chmod(0o755)
    assert server.returncode == 2, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err[-3000:]
    assert "store_read_only" in err and "read-only" in err and "RAG_DATA_DIR" in err
    port = free_port()
    server = _serve(data_dir, port, read_only=False)  # the next run, on a writable dir, binds
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.communicate()[1][-3000:]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "rag serve did not bind"
                time.sleep(0.2)
    finally:
        server.terminate()
        try:
            server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def test_an_upload_that_fills_the_disk_is_the_one_line_disk_full_error_and_keeps_nothing(tmp_path: Path):
    import errno
    import io

    from ingest.uploads import save_uploads

    class FillsTheDisk(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            raise OSError(errno.ENOSPC, "No space left on device")

    uploads = tmp_path / "uploads"
    with pytest.raises(StoreError) as caught:
        save_uploads(uploads, "job1", [("ok.txt", b"fits"), ("big.txt", FillsTheDisk())], limit_mb=1)
    assert caught.value.code == "disk_full" and "free some space" in caught.value.message
    assert not (uploads / "job1").exists()
