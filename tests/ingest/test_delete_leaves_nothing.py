"""A deleted document leaves nothing under the data dir: no text, title, heading, path, ACL token or vector, in
any file (the saved search index and the registry's change log included), through every way of deleting (the
ingest service, a prune, the CLI, the admin API on a running server), while the store is still open and after it
closes. Real chromadb on disk; the bytes of every file are searched."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from ingest.chunking import document_id
from ingest.pipeline import IngestService
from rag.container import Container, build_ingest_service
from rag.errors import NotFoundError
from rag.settings import Settings, load_settings
from rag.store import ChromaStore
from serving.app import create_app
from serving.cli import app as cli_app
from tests.fakes import EchoEngine, HashEmbedder, api_key_settings, auth
from tests.serving.server import running

BODY = "Zebrafish7731 is the secret project codename"
TITLE = "Quokkaplan Dossier"
HEADING = "Wombatstage Timeline"
GROUP = "group:okapiclub"
SECRET = f"# {TITLE}\n\n## {HEADING}\n\n{BODY}. The launch waits for the board.\n"
OTHER = "# Policy\n\n## Leave\n\nStaff get 26 days of annual leave.\n\n## Travel\n\nBook trips in TripDesk.\n"


class DenseHashEmbedder(HashEmbedder):
    """Dense unit vectors drawn from a hash of the text, so that one chunk's vector can be told apart from every
    other run of floats on disk (the bag-of-words vectors are mostly zeros)."""

    model_id = "dense-hash-embedder"
    dim = 64

    def _vector(self, text: str) -> list[float]:
        seed = int(hashlib.md5(text.encode()).hexdigest()[:8], 16)
        vector = np.random.default_rng(seed).standard_normal(self.dim)
        return (vector / np.linalg.norm(vector)).tolist()


def holds_vector(data: bytes, vector: np.ndarray) -> bool:
    """Whether ``data`` holds the first values of ``vector`` as float32, at any alignment, to 1e-5 (Chroma's
    vector segment stores them normalised again, which can change the last bits)."""
    head = vector[:6].astype(np.float32)
    for offset in range(4):
        usable = (len(data) - offset) // 4 * 4
        values = np.frombuffer(data[offset : offset + usable], dtype=np.float32)
        if values.size < head.size:
            continue
        with np.errstate(invalid="ignore"):
            starts = np.flatnonzero(np.abs(values[: values.size - head.size + 1] - head[0]) < 1e-5)
        if any(np.allclose(values[i : i + head.size], head, atol=1e-5) for i in starts):
            return True
    return False


class Traces:
    """What a document leaves on disk: its words, names and vectors, looked for in every file under a folder."""

    def __init__(self, data_dir: Path, path: Path, vectors: list[list[float]]) -> None:
        self.data_dir = data_dir
        self.needles = {
            "body": b"Zebrafish7731",
            "title": TITLE.encode(),
            "heading": HEADING.encode(),
            "path": str(path).encode(),
            "file name": path.name.encode(),
            "acl": GROUP.encode(),
            "doc id": document_id(path).encode(),
        }
        self.vectors = [np.asarray(v, dtype=np.float32) for v in vectors]
        assert self.vectors, "the document has vectors to look for"

    def found(self) -> dict[str, list[str]]:
        """Kind of trace -> files holding it."""
        hits: dict[str, list[str]] = {}
        for file in sorted(p for p in self.data_dir.rglob("*") if p.is_file()):
            data = file.read_bytes()
            name = str(file.relative_to(self.data_dir))
            for kind, needle in self.needles.items():
                if needle in data:
                    hits.setdefault(kind, []).append(name)
            if any(holds_vector(data, v) for v in self.vectors):
                hits.setdefault("vector", []).append(name)
        return hits


def assert_gone(traces: Traces) -> None:
    """Nothing of the document is left under the data dir, except where embedded Chroma's own log still holds
    its records: Chroma purges that log only once its vector segment has persisted past them, every 1000 writes
    (``rag.store.LOG_SYNC_THRESHOLD``; persisting after each write cost crash safety). That residue is checked to
    be exactly that: in ``embeddings_queue`` only, never in Chroma's tables of live records, nor anywhere else."""
    found = traces.found()
    files = {name for names in found.values() for name in names}
    assert files <= {"chroma/chroma.sqlite3"}, found
    conn = sqlite3.connect(traces.data_dir / "chroma" / "chroma.sqlite3")
    try:
        doc_id = traces.needles["doc id"].decode()
        live = conn.execute("SELECT count(*) FROM embeddings WHERE embedding_id LIKE ?", (doc_id + "%",)).fetchone()
        queued = conn.execute("SELECT count(*) FROM embeddings_queue WHERE id LIKE ?", (doc_id + "%",)).fetchone()
    finally:
        conn.close()
    assert live == (0,)
    assert bool(files) == (queued[0] > 0)  # whatever is left is the log's, and the log's only


def write_docs(folder: Path) -> Path:
    folder.mkdir(parents=True)
    secret = folder / "okapi-ledger.md"
    secret.write_text(SECRET)
    (folder / "policy.md").write_text(OTHER)
    return secret


def settings_for(tmp_path: Path, **server) -> Settings:
    return load_settings(
        data_dir=tmp_path / "data",
        chunking={"chunk_tokens": 60, "overlap_tokens": 8},
        ingest={"parse_workers": 1},
        server={"api_keys": api_key_settings(), **server},
    )


def ingest(settings: Settings, folder: Path) -> tuple[IngestService, Traces]:
    """The two documents written into ``folder`` and ingested, the secret one for ``GROUP`` only; its traces,
    checked to be on disk."""
    write_docs(folder)
    store = ChromaStore(settings.data_dir / "chroma", settings.collection)
    service = build_ingest_service(settings, embedder=DenseHashEmbedder(), store=store)
    path = folder / "okapi-ledger.md"
    service.ingest_paths([path], acl=[GROUP])
    service.ingest_paths([folder / "policy.md"], acl=["public"])
    vectors = store.collection.get(where={"doc_id": document_id(path)}, include=["embeddings"])["embeddings"]
    traces = Traces(settings.data_dir, path, [list(v) for v in vectors])
    store.load_index()
    store.save_index()  # the saved search index (data/index/) and the change log hold its ids and vectors too
    before = traces.found()
    assert set(before) == set(traces.needles) | {"vector"}, before  # every kind is on disk, so each check can fail
    saved = f"index/{settings.collection}/"
    assert any(name.startswith(saved) for name in before["vector"]) and any(
        name.startswith(saved) for name in before["doc id"]
    ), before
    assert store.docstore.vector_changes(0, store.docstore.vectors_version())  # the change log names its chunks
    return service, traces


def test_service_delete_leaves_nothing_open_or_closed(tmp_path: Path):
    settings = settings_for(tmp_path)
    service, traces = ingest(settings, tmp_path / "docs")
    doc_id = document_id(tmp_path / "docs" / "okapi-ledger.md")
    record = service.delete_document(doc_id)
    assert record.path.endswith("okapi-ledger.md")
    assert_gone(traces)  # the store is still open: nothing waits for a close to be wiped
    assert service.registry.document(doc_id) is None
    assert not [i for i in service.store.all_ids() if i.startswith(doc_id)]
    assert service.store.count() > 0  # the other document is untouched
    with pytest.raises(NotFoundError, match="rag docs list"):
        service.delete_document(doc_id)
    service.store.close()
    assert_gone(traces)


def test_prune_leaves_nothing(tmp_path: Path):
    settings = settings_for(tmp_path)
    folder = tmp_path / "docs"
    service, traces = ingest(settings, folder)
    (folder / "okapi-ledger.md").unlink()
    report = service.ingest_paths([folder], prune=True)
    assert report.count("removed") == 1
    assert_gone(traces)
    service.store.close()
    assert_gone(traces)


def test_cli_delete_leaves_nothing(tmp_path: Path, monkeypatch):
    settings = settings_for(tmp_path)
    service, traces = ingest(settings, tmp_path / "docs")
    service.store.close()  # the CLI is another process: it opens the store itself
    monkeypatch.setenv("RAG_CHUNKING__CHUNK_TOKENS", "60")
    doc_id = document_id(tmp_path / "docs" / "okapi-ledger.md")
    result = CliRunner().invoke(cli_app, ["--data-dir", str(settings.data_dir), "docs", "delete", doc_id])
    assert result.exit_code == 0, result.output
    assert "deleted" in result.output
    assert_gone(traces)  # the CLI's store is not closed yet: as a process that has not exited


def test_admin_api_delete_leaves_nothing_on_a_running_server_and_after_stop(tmp_path: Path):
    settings = settings_for(tmp_path, admin_api=True, admin_paths=[tmp_path / "docs"])
    folder = tmp_path / "docs"
    service, traces = ingest(settings, folder)
    service.store.close()
    container = Container(
        settings, DenseHashEmbedder(), EchoEngine(), ChromaStore(settings.data_dir / "chroma", settings.collection)
    )
    container.load()
    doc_id = document_id(folder / "okapi-ledger.md")
    with running(create_app(container=container)) as url, httpx.Client(base_url=url, headers=auth("admin")) as client:
        assert client.post("/v1/retrieve", json={"query": "launch board", "top_k": 5}).status_code == 200
        deleted = client.delete(f"/v1/admin/documents/{doc_id}")
        assert deleted.status_code == 200, deleted.text
        assert_gone(traces)
        assert client.get(f"/v1/admin/documents/{doc_id}").status_code == 404
    deadline = time.monotonic() + 10
    while container.store._client is not None and time.monotonic() < deadline:  # the lifespan closes the store
        time.sleep(0.05)
    assert_gone(traces)
