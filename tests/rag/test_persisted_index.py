"""The store's search index on disk and in step across store objects (issue 16, items 3 and 4): a reopened store
loads the saved copy instead of reading Chroma back, a damaged copy is rebuilt to the same results, and another
store's writes arrive as deltas from the registry's change log, never by a full reload. Real chromadb on disk."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from rag.schemas import ChunkRecord
from rag.store import ChromaStore
from rag.vector_index import ExactIndex

DIM = 32


def records(doc: str, n: int, start: int = 0) -> list[ChunkRecord]:
    return [
        ChunkRecord(id=f"{doc}-{i}", text=f"{doc} {i}", embed_text=f"{doc} {i}", metadata={"doc_id": doc})
        for i in range(start, start + n)
    ]


def vectors(n: int, seed: int) -> list[list[float]]:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32).tolist()


def fill(store: ChromaStore, docs: int = 4, per_doc: int = 50, seed: int = 1) -> None:
    for d in range(docs):
        store.upsert(records(f"doc{d}", per_doc), vectors(per_doc, seed * 100 + d))


def rebuilt(store: ChromaStore) -> ExactIndex:
    """A fresh index from Chroma's records alone."""
    index = ExactIndex()
    for ids, doc_ids, found in store._records(None):
        index.add(ids, doc_ids, found)
    return index


def searches(store_or_index, allowed_lists=(None, ["doc1"], ["doc0", "doc3"], [])) -> list:  # noqa: ANN001
    queries = vectors(8, 99)
    search = getattr(store_or_index, "dense_search", None) or store_or_index.search
    return [
        [(cid, round(score, 5)) for cid, score in search(q, 10, allowed)] for q in queries for allowed in allowed_lists
    ]


def open_store(tmp_path: Path) -> ChromaStore:
    return ChromaStore(tmp_path / "data" / "chroma", "persist")


def test_a_reopened_store_loads_the_saved_index_without_reading_chroma(tmp_path, monkeypatch):
    store = open_store(tmp_path)
    fill(store)
    expected = searches(store)  # first use: built from Chroma, then saved
    assert store.keeper.opened_from == "store"
    store.close()
    folder = tmp_path / "data" / "index" / "persist"
    assert (folder / "manifest.json").exists() and not list(folder.glob("writer-*.mark"))

    store = open_store(tmp_path)
    monkeypatch.setattr(store, "_records", lambda ids: (_ for _ in ()).throw(AssertionError("read Chroma back")))
    try:
        assert store.load_index() == 200
        assert store.keeper.opened_from == "disk" and store.keeper.rebuilds == 0
        assert searches(store) == expected
    finally:
        store.close()


def test_a_damaged_saved_index_is_rebuilt_from_chroma_with_identical_results(tmp_path, caplog):
    store = open_store(tmp_path)
    fill(store)
    expected = searches(store)
    store.close()
    folder = tmp_path / "data" / "index" / "persist"
    largest = max(folder.glob("*.npy"), key=lambda p: p.stat().st_size)
    data = bytearray(largest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    largest.write_bytes(bytes(data))

    store = open_store(tmp_path)
    try:
        with caplog.at_level(logging.WARNING, logger="rag.index_keeper"):
            assert searches(store) == expected
        assert store.keeper.opened_from == "store" and store.keeper.rebuilds == 1
        assert [r.message for r in caplog.records if "rebuilding" in r.message] == [
            f"search index: the saved copy at {folder} has a damaged file ({largest.name}: its digest does not "
            "match); rebuilding it from the store's records"
        ]
    finally:
        store.close()
    store = open_store(tmp_path)  # the rebuild was saved
    try:
        assert searches(store) == expected and store.keeper.opened_from == "disk"
    finally:
        store.close()


def test_writes_made_without_the_index_loaded_are_applied_from_the_change_log_at_start(tmp_path):
    store = open_store(tmp_path)
    fill(store)
    store.load_index()
    store.close()
    writer = open_store(tmp_path)  # like `rag ingest`: writes, never searches
    writer.upsert(records("doc9", 30), vectors(30, 9))
    writer.delete([f"doc0-{i}" for i in range(10)])
    writer.close()

    store = open_store(tmp_path)
    try:
        assert searches(store) == searches(rebuilt(store))
        assert store.keeper.opened_from == "disk" and store.keeper.deltas == 1 and store.keeper.rebuilds == 0
        assert len(store.index) == 200 + 30 - 10
    finally:
        store.close()


def test_another_stores_writes_and_removals_arrive_as_deltas(tmp_path):
    reader, writer = open_store(tmp_path), open_store(tmp_path)  # two store objects on one data dir
    try:
        fill(reader)
        assert reader.load_index() == 200 and reader.keeper.rebuilds == 1
        writer.upsert(records("new", 1000), vectors(1000, 7))
        new_vectors = vectors(1000, 7)
        hits = reader.dense_search(new_vectors[123], 1, ["new"])
        assert hits and hits[0][0] == "new-123"
        assert reader.keeper.deltas == 1 and reader.keeper.rebuilds == 1  # a delta, not a reload
        assert len(reader.index) == 1200

        writer.delete([f"new-{i}" for i in range(500)] + [f"doc1-{i}" for i in range(50)])
        assert all(cid != "new-123" for cid, _ in reader.dense_search(new_vectors[123], 50))
        assert reader.dense_search(vectors(1, 3)[0], 10, ["doc1"]) == []  # every chunk of doc1 removed
        assert reader.keeper.deltas == 2 and reader.keeper.rebuilds == 1 and len(reader.index) == 650
        for q in vectors(20, 11):  # nothing forbidden ever comes back
            assert all(cid.startswith("doc2-") for cid, _ in reader.dense_search(q, 20, ["doc2"]))
        assert searches(reader) == searches(rebuilt(reader))

        writer.delete([f"doc3-{i}" for i in range(10)])
        writer.purge_deleted()  # deletion complete: the change log is emptied, the saved copy rewritten
        assert writer.docstore.conn.execute("SELECT count(*) FROM vector_changes").fetchone() == (0,)
        assert searches(reader) == searches(rebuilt(reader))  # behind the emptied log: reloaded, from disk
        assert reader.keeper.opened_from == "disk" and reader.keeper.rebuilds == 1 and reader.keeper.deltas == 2
        assert not any(cid.startswith("doc3-") and int(cid[5:]) < 10 for cid, _ in reader.dense_search(q, 300))
        writer.upsert(records("late", 5), vectors(5, 12))
        assert searches(reader) == searches(rebuilt(reader)) and reader.keeper.deltas == 3
    finally:
        writer.close()
        reader.close()


def test_a_recent_write_is_applied_from_its_logged_vectors_and_an_older_one_from_chroma(tmp_path, monkeypatch):
    import rag.change_log as change_log

    reader, writer = open_store(tmp_path), open_store(tmp_path)
    try:
        fill(reader, docs=2, per_doc=20)
        reader.load_index()
        fetched: list[list[str]] = []
        real_records = reader._records
        monkeypatch.setattr(reader.keeper, "_records", lambda ids: (fetched.append(list(ids)), real_records(ids))[1])
        writer.upsert(records("new", 300), vectors(300, 7))
        assert reader.dense_search(vectors(300, 7)[42], 1, ["new"])[0][0] == "new-42"
        assert fetched == [[]]  # every vector came from the log, none from Chroma
        assert searches(reader) == searches(rebuilt(reader))

        monkeypatch.setattr(change_log, "PAYLOAD_VERSIONS", 1)
        writer.upsert(records("old", 5), vectors(5, 8))
        writer.upsert(records("newer", 5), vectors(5, 9))  # the log keeps the vectors of this write only
        assert searches(reader) == searches(rebuilt(reader))
        assert fetched[-1] == [f"old-{i}" for i in range(5)]  # the older write's vectors, fetched from Chroma
        assert writer.docstore.conn.execute("SELECT count(*) FROM vector_payloads").fetchone() == (5,)

        writer.delete([f"new-{i}" for i in range(300)])
        writer.purge_deleted()  # deletion complete: no logged vector is left behind either
        assert writer.docstore.conn.execute("SELECT count(*) FROM vector_payloads").fetchone() == (0,)
    finally:
        writer.close()
        reader.close()


def test_the_change_log_stays_bounded(tmp_path, monkeypatch):
    import rag.change_log as change_log

    monkeypatch.setattr(change_log, "CHANGE_LOG_VERSIONS", 5)
    store = open_store(tmp_path)
    try:
        fill(store, docs=2, per_doc=5)
        store.load_index()
        for i in range(8):
            store.upsert(records("more", 1, start=i), vectors(1, 20 + i))
        now = store.docstore.vectors_version()
        assert store.docstore.vector_changes(now - 5, now) == {f"more-{i}": False for i in range(3, 8)}
        assert store.docstore.vector_changes(now - 6, now) is None  # truncated: a reader that far behind reloads
    finally:
        store.close()


def test_a_slow_save_spaces_out_the_next_ones(tmp_path, monkeypatch):
    store = open_store(tmp_path)
    try:
        fill(store, docs=1, per_doc=5)
        store.load_index()
        store.keeper.save_every, store.keeper._save_gap = 0.0, 0.0  # every write would save, but for their cost
        saves = []
        real_save = store.index.save

        def slow_save(path, version=0):  # noqa: ANN001, ANN202
            saves.append(version)
            time.sleep(0.2)
            real_save(path, version)

        monkeypatch.setattr(store.index, "save", slow_save)
        for n in range(3):  # written quickly: only the first is saved, the others wait ten saves' time (2 s)
            store.upsert(records(f"quick{n}", 2), vectors(2, 40 + n))
        assert len(saves) == 1 and store.keeper._save_gap >= 2.0
        store.keeper.save_cost_share = 0
        store.upsert(records("later", 2), vectors(2, 50))
        store.keeper._save_gap = 0.0
        store.upsert(records("later2", 2), vectors(2, 51))
        assert len(saves) == 2  # without the spacing, the next write saves again
    finally:
        store.close()
