"""The store's contract (``rag.seams.Store``), written once as ``StoreContract`` and run over every implementation:
embedded Chroma (PersistentClient on a directory) and a real Chroma server started on loopback (`chroma run`, from
the chromadb package), through HttpClient. An implementation is a subclass giving the ``make_store`` fixture; one
that is not a ``ChromaStore`` also overrides ``write``, ``remove`` and ``reopen``. Formerly
tests/rag/test_store_contract.py.

No in-memory fake store: the embedded store on a temporary directory is fast enough for every test that needs a
store, and a fake of the registry's access SQL could drift from it where it matters most."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence

import numpy as np
import pytest

from rag.schemas import ChunkRecord, SearchFilters
from rag.store import WRITE_BATCH, ChromaStore

DIM = 16


def vectors_for(doc: str, n: int) -> list[list[float]]:
    rng = np.random.default_rng(int(hashlib.sha256(doc.encode()).hexdigest()[:8], 16))
    return rng.normal(size=(n, DIM)).astype(np.float32).tolist()


class StoreContract:
    """Every store passes these. The writes (``write``, ``remove``) are the ingest side, not part of the seam."""

    def write(
        self,
        store: ChromaStore,
        doc: str,
        texts: Sequence[str],
        vectors: Sequence[Sequence[float]] | None = None,
        acl: Sequence[str] = ("public",),
        path: str | None = None,
    ) -> list[list[float]]:
        """One document's chunks (``doc-0``, ``doc-1``, …, in reading order), committed with ``acl``."""
        path = path or f"/docs/{doc}.md"
        vectors = [list(v) for v in vectors] if vectors is not None else vectors_for(doc, len(texts))
        records = [
            ChunkRecord(
                id=f"{doc}-{i}", text=t, embed_text=t, metadata={"doc_id": doc, "source": path, "chunk_index": i}
            )
            for i, t in enumerate(texts)
        ]
        store.docstore.begin(doc, path, list(acl))
        store.upsert(records, vectors)
        store.docstore.commit(
            doc, path=path, title=doc, doc_type="md", content_hash="-".join(texts), size_bytes=1,
            chunk_count=len(texts), acl=list(acl),
        )  # fmt: skip
        return vectors

    def remove(self, store: ChromaStore, ids: Sequence[str]) -> None:
        store.delete(ids)

    def reopen(self, store: ChromaStore, make_store) -> ChromaStore:  # noqa: ANN001 - the fixture's factory
        store.close()
        return make_store()

    def numbered(self, store: ChromaStore, doc: str, n: int, acl: Sequence[str] = ("public",)) -> list[list[float]]:
        return self.write(store, doc, [f"{doc} chunk {i} about topic{i % 7}" for i in range(n)], acl=acl)

    # -- reading back ---------------------------------------------------------------------------------------

    def test_write_find_read_delete_and_reopen(self, make_store):
        store = make_store()
        vectors = self.numbered(store, "alpha", 5)
        self.numbered(store, "beta", 3)
        hits = store.dense_search(vectors[2], 3)
        assert hits[0][0] == "alpha-2" and hits[0][1] == pytest.approx(1.0, abs=1e-5)
        assert [c.text for c in store.chunks(hits[:1])] == ["alpha chunk 2 about topic2"]
        assert [cid for cid, _ in store.dense_search(vectors[2], 3, ["beta"])][0].startswith("beta")
        self.remove(store, ["alpha-2"])
        assert "alpha-2" not in {cid for cid, _ in store.dense_search(vectors[2], 8)}
        assert store.chunks([("alpha-2", 1.0)]) == [] and store.vectors(["alpha-2"]) == {}
        assert "alpha chunk 2 about topic2" not in store.texts_mentioning("chunk 2", {"public"})
        again = self.reopen(store, make_store)  # everything written is there, and the index is loaded from it
        assert again.dense_search(vectors[3], 1)[0][0] == "alpha-3"
        assert len(again.dense_search(vectors[3], 100)) == 7

    def test_chunks_keep_the_given_order_and_leave_out_unknown_ids(self, make_store):
        store = make_store()
        self.numbered(store, "alpha", 3)
        got = store.chunks([("alpha-2", 0.5), ("nope", 0.9), ("alpha-0", 0.25)])
        assert [(c.id, c.score, c.metadata["doc_id"]) for c in got] == [
            ("alpha-2", 0.5, "alpha"),
            ("alpha-0", 0.25, "alpha"),
        ]

    def test_vectors_are_the_stored_ones_at_unit_length(self, make_store):
        """Unit length: the retriever scores keyword-only hits by a dot product with the normalised query."""
        store = make_store()
        vectors = self.numbered(store, "alpha", 2)
        got = store.vectors(["alpha-1", "nope"])
        assert set(got) == {"alpha-1"}
        np.testing.assert_allclose(got["alpha-1"], np.asarray(vectors[1]) / np.linalg.norm(vectors[1]), atol=1e-5)

    def test_a_document_its_access_and_its_texts_in_reading_order(self, make_store):
        store = make_store()
        self.write(store, "guide", ["first part", "second part", "third part"], acl=["group:hr", "user:bob"])
        record = store.document("guide")
        assert record is not None and record.status == "indexed" and record.chunk_count == 3
        assert store.document_acl("guide") == {"group:hr", "user:bob"}
        assert store.document_texts("guide") == ["first part", "second part", "third part"]
        assert store.document("nope") is None and store.document_acl("nope") == set()
        assert store.document_texts("nope") == []

    def test_keyword_search_and_texts_mentioning(self, make_store):
        store = make_store()
        self.write(store, "leave", ["The holiday allowance is 25 days.", "Sick leave needs a note."])
        self.write(store, "travel", ["Trains are booked in second class."])
        hits = store.keyword_search("holiday allowance", 5, {"public"})
        assert [cid for cid, _ in hits] == ["leave-0"] and hits[0][1] > 0
        assert store.keyword_search("the and of", 5, {"public"}) == []  # stop words only
        assert store.texts_mentioning("second class", {"public"}) == ["Trains are booked in second class."]

    # -- access control ---------------------------------------------------------------------------------------

    def test_a_very_selective_allow_list_still_returns_the_permitted_chunk(self, make_store):
        """Both legs filter inside the search, before their top-k: the one permitted chunk is found even when
        every forbidden chunk matches the query better."""
        store = make_store()
        query = vectors_for("query", 1)[0]
        for i in range(30):
            near = (np.asarray(query) + 0.01 * np.asarray(vectors_for(f"other{i}", 1)[0])).tolist()
            self.write(store, f"other{i}", ["holiday allowance holiday allowance"], [near], acl=["group:others"])
        self.write(store, "needle", ["holiday notes"], [(-np.asarray(query)).tolist()], acl=["group:x"])
        allowed = store.allowed_documents({"group:x"})
        assert allowed == ["needle"]
        assert store.dense_search(query, 1)[0][0] != "needle-0"  # a filter after the top-k would find nothing
        assert [cid for cid, _ in store.dense_search(query, 1, allowed)] == ["needle-0"]
        assert [cid for cid, _ in store.keyword_search("holiday allowance", 1, {"group:x"})] == ["needle-0"]
        assert store.texts_mentioning("holiday", {"group:x"}) == ["holiday notes"]

    def test_nothing_forbidden_ever_comes_back_from_either_leg(self, make_store):
        store = make_store()
        words = "pay rise policy for the whole company"
        self.write(store, "public", [words, "canteen menu"])
        self.write(store, "hr", [words, "salary bands by grade"], acl=["group:hr"])
        self.write(store, "bob", [words], acl=["user:bob"])
        for tokens, visible in (
            ({"public"}, {"public"}),
            ({"public", "group:hr"}, {"public", "hr"}),
            ({"public", "user:bob"}, {"public", "bob"}),
            ({"group:nobody"}, set()),
        ):
            allowed = store.allowed_documents(tokens)
            assert set(allowed) == visible
            dense = store.dense_search(vectors_for("public", 1)[0], 100, allowed)
            keyword = store.keyword_search("pay rise salary bands canteen", 100, tokens)
            found = {c.metadata["doc_id"] for c in store.chunks(list(dict(dense + keyword).items()))}
            assert found == visible, tokens
            mentioning = store.texts_mentioning("pay rise", tokens)
            assert len(mentioning) == len(visible)
        assert store.dense_search(vectors_for("hr", 1)[0], 100, []) == []  # an empty allow-list matches nothing

    def test_filters_narrow_the_callers_documents(self, make_store):
        store = make_store()
        self.write(store, "a", ["alpha text"], path="/docs/policies/a.md")
        self.write(store, "b", ["alpha text"], path="/docs/other/b.md")
        self.write(store, "c", ["alpha text"], path="/docs/policies/c.md", acl=["group:hr"])
        policies = SearchFilters(path_prefix="/docs/policies/")
        assert store.allowed_documents({"public"}, policies) == ["a"]
        assert [cid for cid, _ in store.keyword_search("alpha", 10, {"public"}, policies)] == ["a-0"]
        assert store.texts_mentioning("alpha", {"public"}, policies) == ["alpha text"]

    def test_a_change_of_access_changes_the_generation_and_the_answer(self, make_store):
        store = make_store()
        self.write(store, "memo", ["quarterly numbers"], acl=["public"])
        before = store.access_generation
        assert store.allowed_documents({"public"}) == ["memo"]
        self.write(store, "memo", ["quarterly numbers"], acl=["group:board"])  # access narrowed on re-ingest
        assert store.access_generation != before
        assert store.allowed_documents({"public"}) == []
        assert store.keyword_search("quarterly numbers", 5, {"public"}) == []
        assert store.document_acl("memo") == {"group:board"}


class ChromaContract(StoreContract):
    """What both Chroma modes add: batched writes and the ingest side's reads. A subclass gives the Chroma
    server's address (``chroma_address``; None: embedded)."""

    @pytest.fixture
    def make_store(self, request, tmp_path, chroma_address):  # noqa: ANN001, ANN201
        made: list[ChromaStore] = []

        def make(name: str = "contract") -> ChromaStore:
            suffix = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:10]  # one test's collections apart
            store = ChromaStore(tmp_path / "chroma", f"{name}-{suffix}", server=chroma_address)
            made.append(store)
            return store

        yield make
        for store in made:
            store.close()

    def test_large_writes_go_in_batches(self, make_store):
        store = make_store("big")
        n = WRITE_BATCH * 2 + 17
        recs = [
            ChunkRecord(id=f"bulk-{i}", text=f"bulk {i}", embed_text=f"bulk {i}", metadata={"doc_id": "bulk"})
            for i in range(n)
        ]
        store.upsert(recs, vectors_for("bulk", n))
        assert store.count() == n and len(store.all_ids()) == n

    def test_ids_and_chunks_of_a_document(self, make_store):
        store = make_store()
        self.numbered(store, "alpha", 2)
        self.numbered(store, "beta", 3)
        assert store.count() == 5 and store.load_index() == 5
        assert store.existing_ids(["alpha-1", "nope"]) == {"alpha-1"}
        assert set(store.document_chunks("beta")) == {"beta-0", "beta-1", "beta-2"}
        self.remove(store, ["alpha-1"])
        assert store.count() == 4 and store.docstore.texts(["alpha-1"]) == {}


class TestEmbeddedChroma(ChromaContract):
    @pytest.fixture
    def chroma_address(self) -> None:
        return None


class TestChromaServer(ChromaContract):
    @pytest.fixture
    def chroma_address(self, chroma_server: tuple[str, int]) -> tuple[str, int]:
        return chroma_server


def test_two_workers_on_one_chroma_server_see_each_others_writes(chroma_server, tmp_path):
    """Server mode lets several API workers share the store (embedded mode refuses a second process:
    tests/ingest/test_isolation.py). Two store objects with their own registry connections stand for two
    processes here; tests/integration/test_chroma_server_workers.py runs a real second process."""
    name = f"shared-{os.getpid()}-{time.monotonic_ns()}"
    first = ChromaStore(tmp_path / "chroma", name, server=chroma_server)
    second = ChromaStore(tmp_path / "chroma", name, server=chroma_server)
    contract = StoreContract()
    contract.numbered(first, "one", 2)
    assert first.load_index() == 2
    before = first.access_generation
    vectors = contract.numbered(second, "two", 3)
    assert first.access_generation != before  # the other worker's ACL commit invalidates access caches
    assert first.dense_search(vectors[1], 1)[0][0] == "two-1"  # the first worker's index caught up
    second.delete(["two-1"])
    assert "two-1" not in {cid for cid, _ in first.dense_search(vectors[1], 5)}
    first.close()
    second.close()
