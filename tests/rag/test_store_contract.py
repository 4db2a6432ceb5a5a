"""The store's contract, run against both Chroma modes: embedded (PersistentClient on a directory) and a real
Chroma server started on loopback (`chroma run`, from the chromadb package), through HttpClient."""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np
import pytest

from rag.schemas import ChunkRecord
from rag.store import WRITE_BATCH, ChromaStore


@pytest.fixture(params=["embedded", "server"])
def make_store(request, tmp_path):
    server = request.getfixturevalue("chroma_server") if request.param == "server" else None
    made: list[ChromaStore] = []

    def make(name: str = "contract") -> ChromaStore:
        suffix = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:10]  # one test's collections apart
        store = ChromaStore(tmp_path / "chroma", f"{name}-{suffix}", server=server)
        made.append(store)
        return store

    make.mode = request.param
    yield make
    for store in made:
        store.close()


def records(doc: str, n: int, start: int = 0) -> tuple[list[ChunkRecord], list[list[float]]]:
    rng = np.random.default_rng(abs(hash(doc)) % 2**32)
    recs = [
        ChunkRecord(
            id=f"{doc}-{i}",
            text=f"{doc} chunk {i} about topic{i % 7}",
            embed_text=f"{doc} chunk {i} about topic{i % 7}",
            metadata={"doc_id": doc, "source": f"/docs/{doc}.md", "chunk_index": i},
        )
        for i in range(start, start + n)
    ]
    return recs, rng.normal(size=(n, 16)).astype(np.float32).tolist()


def put(store: ChromaStore, doc: str, n: int) -> list[list[float]]:
    recs, vectors = records(doc, n)
    store.docstore.begin(doc, f"/docs/{doc}.md", ["public"])
    store.upsert(recs, vectors)
    store.docstore.commit(
        doc, path=f"/docs/{doc}.md", title=doc, doc_type="md", content_hash=doc, size_bytes=1, chunk_count=n,
        acl=["public"],
    )  # fmt: skip
    return vectors


def test_write_find_read_delete_and_reopen(make_store):
    store = make_store()
    vectors = put(store, "alpha", 5)
    put(store, "beta", 3)
    assert store.count() == 8
    hits = store.index.search(vectors[2], 3)
    assert hits[0][0] == "alpha-2" and hits[0][1] == pytest.approx(1.0, abs=1e-5)
    assert [c.text for c in store.chunks(hits[:1])] == ["alpha chunk 2 about topic2"]
    assert [cid for cid, _ in store.index.search(vectors[2], 3, ["beta"])][0].startswith("beta")
    assert store.existing_ids(["alpha-1", "nope"]) == {"alpha-1"}
    assert set(store.document_chunks("beta")) == {"beta-0", "beta-1", "beta-2"}
    store.delete(["alpha-2"])
    assert store.count() == 7 and "alpha-2" not in {cid for cid, _ in store.index.search(vectors[2], 8)}
    assert store.docstore.texts(["alpha-2"]) == {}
    store.close()
    again = make_store()  # reopened: everything written is there, and the index is loaded from it
    assert again.count() == 7 and again.index.search(vectors[3], 1)[0][0] == "alpha-3"


def test_large_writes_go_in_batches(make_store):
    store = make_store("big")
    recs, vectors = records("bulk", WRITE_BATCH * 2 + 17)
    store.upsert(recs, vectors)
    assert store.count() == len(recs) and len(store.all_ids()) == len(recs)


def test_two_workers_on_one_chroma_server_see_each_others_writes(chroma_server, tmp_path):
    """Server mode lets several API workers share the store (embedded mode refuses a second process:
    tests/ingest/test_isolation.py). Two store objects with their own registry connections stand for two
    processes here; tests/integration/test_chroma_server_workers.py runs a real second process."""
    name = f"shared-{os.getpid()}-{time.monotonic_ns()}"
    first = ChromaStore(tmp_path / "chroma", name, server=chroma_server)
    second = ChromaStore(tmp_path / "chroma", name, server=chroma_server)
    put(first, "one", 2)
    assert len(first.index) == 2
    before = first.docstore.access_generation
    vectors = put(second, "two", 3)
    assert first.docstore.access_generation != before  # the other worker's ACL commit invalidates access caches
    assert first.index.search(vectors[1], 1)[0][0] == "two-1"  # the first worker's index caught up
    second.delete(["two-1"])
    assert "two-1" not in {cid for cid, _ in first.index.search(vectors[1], 5)}
    first.close()
    second.close()
