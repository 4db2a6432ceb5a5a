"""The search index's contract (``rag.seams.SearchIndex``), written once and run over every implementation: the
exact index today. An approximate one joins by one more ``Implementation`` in ``IMPLEMENTATIONS``, with the
recall it promises; the access-control tests hold for every implementation without exception (a selective
filter still finds the permitted chunk, nothing forbidden ever comes back), whatever its recall."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from rag.errors import IndexFileError
from rag.index_files import MANIFEST
from rag.ivf_index import IvfIndex
from rag.seams import SearchIndex
from rag.vector_index import DenseIndex, ExactIndex

DIM = 32


@dataclass(frozen=True)
class Implementation:
    make: Callable[[], SearchIndex]
    exact: bool  # results equal the exact cosine ranking, ties aside
    min_recall: float  # recall@10 against the exact ranking on random vectors


# The IVF index at a test-friendly size: trained past 1,000 chunks, IVF search above 50 permitted rows, few lists
# probed (8 of 32: recall@10 0.71 on these random vectors), so the approximate path (bitmap filter, stale labels,
# pending rows) is what most tests exercise. The same with 8-bit scalar-quantised lists (a quarter of the memory):
# its candidates are scored again exactly, so its recall is close to the flat one's.
IMPLEMENTATIONS = {
    "exact": Implementation(ExactIndex, exact=True, min_recall=1.0),
    "ivf": Implementation(partial(IvfIndex, min_rows=1000, exact_below=50, nprobe=8), exact=False, min_recall=0.65),
    "ivf-sq8": Implementation(
        partial(IvfIndex, min_rows=1000, exact_below=50, nprobe=8, codec="sq8"), exact=False, min_recall=0.65
    ),
}


@pytest.fixture(params=list(IMPLEMENTATIONS))
def impl(request) -> Implementation:  # noqa: ANN001 - pytest's request
    return IMPLEMENTATIONS[request.param]


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


@dataclass
class Corpus:
    """Random chunks in ``docs`` documents, with the exact answers to check an index against."""

    ids: list[str]
    doc_ids: list[str]
    vectors: np.ndarray

    @classmethod
    def random(cls, n: int, docs: int, seed: int = 7) -> Corpus:
        rng = np.random.default_rng(seed)
        return cls(
            [f"c{i}" for i in range(n)], [f"d{i % docs}" for i in range(n)], rng.normal(size=(n, DIM)).astype("f4")
        )

    def fill(self, index: SearchIndex) -> SearchIndex:
        index.add(self.ids, self.doc_ids, self.vectors)
        return index

    def exact(self, query: np.ndarray, k: int, allowed: set[str] | None = None) -> list[str]:
        scores = unit(self.vectors) @ unit(query)
        order = np.argsort(-scores, kind="stable")
        return [self.ids[i] for i in order if allowed is None or self.doc_ids[i] in allowed][:k]


def ids_of(hits: list[tuple[str, float]]) -> list[str]:
    return [cid for cid, _ in hits]


def recall(got: list[str], want: list[str]) -> float:
    return len(set(got) & set(want)) / len(want) if want else 1.0


# -- writing and reading back ------------------------------------------------------------------------------------


def test_add_remove_readd_len_and_vectors(impl):
    index = impl.make()
    assert len(index) == 0 and index.search([1.0] * DIM, 5) == [] and index.vectors(["a"]) == {}
    corpus = Corpus.random(50, 5)
    corpus.fill(index)
    assert len(index) == 50
    got = index.vectors(["c3", "nope", "c7"])
    assert set(got) == {"c3", "c7"}
    np.testing.assert_allclose(got["c3"], unit(corpus.vectors[3]), atol=1e-3)  # at unit length
    index.remove(["c3", "c7", "nope"])
    assert len(index) == 48 and index.vectors(["c3"]) == {}
    assert not {"c3", "c7"} & set(ids_of(index.search(corpus.vectors[3], 50)))
    index.add(["c3"], ["d9"], [corpus.vectors[7]])  # back, with another vector and document
    assert len(index) == 49
    assert ids_of(index.search(corpus.vectors[7], 1, ["d9"])) == ["c3"]
    np.testing.assert_allclose(index.vectors(["c3"])["c3"], unit(corpus.vectors[7]), atol=1e-3)
    index.add(["c4"], ["d9"], [corpus.vectors[4]])  # replaced in place: same count, moved to d9
    assert len(index) == 49 and ids_of(index.search(corpus.vectors[4], 1, ["d9"])) == ["c4"]
    assert "c4" not in ids_of(index.search(corpus.vectors[4], 50, ["d4"]))
    index.remove(list(corpus.ids))
    assert len(index) == 0 and index.search(corpus.vectors[0], 5) == []


def test_a_vector_of_other_dimensions_is_refused(impl):
    index = impl.make()
    index.add(["a"], ["d"], [[1.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="dimensions"):
        index.add(["b"], ["d"], [[1.0, 0.0]])


def test_search_order_is_the_exact_cosine_order(impl):
    corpus = Corpus.random(2000, 40)
    index = corpus.fill(impl.make())
    queries = np.random.default_rng(1).normal(size=(20, DIM)).astype("f4")
    recalls = []
    for query in queries:
        hits = index.search(query, 10)
        scores = [score for _, score in hits]
        assert scores == sorted(scores, reverse=True) and len(hits) == 10
        want = corpus.exact(query, 10)
        if impl.exact:
            assert ids_of(hits) == want
            expected = unit(corpus.vectors[[int(c[1:]) for c in want]]) @ unit(query)
            np.testing.assert_allclose(scores, expected, atol=1e-5)
        recalls.append(recall(ids_of(hits), want))
    assert np.mean(recalls) >= impl.min_recall


def test_k_larger_than_the_permitted_set_returns_the_whole_set_best_first(impl):
    corpus = Corpus.random(500, 100)  # 5 chunks a document
    index = corpus.fill(impl.make())
    query = corpus.vectors[0]
    hits = index.search(query, 50, ["d3", "d17"])
    assert ids_of(hits) == corpus.exact(query, 50, {"d3", "d17"}) and len(hits) == 10
    assert len(index.search(query, 10_000)) == 500
    assert index.search(query, 0) == []


# -- access control ----------------------------------------------------------------------------------------------


def test_one_permitted_document_in_a_thousand_comes_first_though_every_forbidden_chunk_is_closer(impl):
    rng = np.random.default_rng(3)
    query = unit(rng.normal(size=DIM).astype("f4"))
    near = unit(query + 0.05 * rng.normal(size=(2000, DIM)).astype("f4"))  # every forbidden chunk: cosine ~0.99
    far = unit(rng.normal(size=DIM).astype("f4") - query)  # the permitted one points away from the query
    index = impl.make()
    index.add([f"c{i}" for i in range(2000)], [f"d{i % 999}" for i in range(2000)], near)
    index.add(["secret-ok"], ["d-permitted"], [far])
    hits = index.search(query, 10, ["d-permitted"])
    assert ids_of(hits) == ["secret-ok"]
    assert hits[0][1] == pytest.approx(float(far @ query), abs=1e-3)
    assert ids_of(index.search(query, 10, ["d-permitted", "d5"]))[-1] == "secret-ok"


def test_nothing_forbidden_ever_comes_back_over_random_allow_lists(impl):
    corpus = Corpus.random(3000, 300, seed=11)
    index = corpus.fill(impl.make())
    index.remove(corpus.ids[::7])  # freed rows must never leak either
    removed = set(corpus.ids[::7])
    doc_of = dict(zip(corpus.ids, corpus.doc_ids, strict=True))
    rng = np.random.default_rng(12345)
    all_docs = sorted(set(corpus.doc_ids))
    for trial in range(60):
        size = int(rng.choice([0, 1, 2, 5, 30, 150, 299]))
        allowed = {str(d) for d in rng.choice(all_docs, size=size, replace=False)} | {f"unknown{trial}"}
        query = rng.normal(size=DIM).astype("f4")
        k = int(rng.integers(1, 40))
        hits = index.search(query, k, sorted(allowed))
        got = ids_of(hits)
        assert all(doc_of[c] in allowed for c in got), f"trial {trial}: a forbidden chunk came back"
        assert not removed & set(got) and len(set(got)) == len(got)
        permitted = sum(1 for c in corpus.ids if c not in removed and doc_of[c] in allowed)
        if impl.exact:
            want = [c for c in corpus.exact(query, len(corpus.ids), allowed) if c not in removed][:k]
            assert got == want
        else:
            assert len(got) == min(k, permitted)


def test_an_empty_allow_list_returns_nothing_and_none_means_everything(impl):
    index = Corpus.random(100, 10).fill(impl.make())
    assert index.search([1.0] * DIM, 10, []) == []
    assert index.search([1.0] * DIM, 10, ["not-a-document"]) == []
    assert len(index.search([1.0] * DIM, 10, None)) == 10


# -- saving and loading ------------------------------------------------------------------------------------------


def searches(index: SearchIndex, seed: int = 5) -> list[list[tuple[str, float]]]:
    rng = np.random.default_rng(seed)
    allow_lists = [None, [], ["d1"], ["d2", "d3", "d9"], [f"d{i}" for i in range(0, 40, 2)]]
    return [index.search(rng.normal(size=DIM), 15, a) for _ in range(8) for a in allow_lists]


def saved(impl: Implementation, tmp_path: Path) -> tuple[SearchIndex, Path]:
    corpus = Corpus.random(1500, 40)
    index = corpus.fill(impl.make())
    index.remove(corpus.ids[5:300:3])  # freed rows, some reused below
    index.add(["n1", "n2", "c6"], ["d1", "d41", "d2"], corpus.vectors[:3] + 0.5)
    folder = tmp_path / "index"
    index.save(folder, version=17)
    return index, folder


def test_save_then_load_gives_identical_results(impl, tmp_path):
    index, folder = saved(impl, tmp_path)
    loaded = impl.make()
    assert loaded.load(folder) == 17 and loaded.load(folder, version=17) == 17  # loading twice replaces
    assert len(loaded) == len(index)
    assert searches(loaded) == searches(index)
    ids = ["c0", "n2", "c6", "c8", "nope"]
    want, got = index.vectors(ids), loaded.vectors(ids)
    assert set(got) == set(want) and all(np.array_equal(got[i], want[i]) for i in want)
    loaded.add(["n3"], ["d5"], [[1.0] * DIM])  # a loaded index goes on taking writes
    loaded.remove(["c0"])
    assert ids_of(loaded.search([1.0] * DIM, 1, ["d5"])) == ["n3"] and "c0" not in loaded.vectors(["c0"])


def test_saving_again_replaces_the_copy_and_leaves_no_old_files(impl, tmp_path):
    index, folder = saved(impl, tmp_path)
    before = {p.name for p in folder.iterdir()}
    index.remove(["c0"])
    index.save(folder, version=18)
    after = {p.name for p in folder.iterdir()}
    assert MANIFEST in after and not (before - {MANIFEST}) & after and not [n for n in after if n.endswith(".tmp")]
    loaded = impl.make()
    assert loaded.load(folder) == 18 and len(loaded) == len(index) and loaded.vectors(["c0"]) == {}
    empty = impl.make()
    empty.save(tmp_path / "empty")
    assert empty.load(tmp_path / "empty") == 0 and len(empty) == 0 and empty.search([1.0] * DIM, 3) == []


def largest_data_file(folder: Path) -> Path:
    return max((p for p in folder.iterdir() if p.name != MANIFEST), key=lambda p: p.stat().st_size)


def truncate(folder: Path) -> None:
    target = largest_data_file(folder)
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])


def flip_a_byte(folder: Path) -> None:
    target = largest_data_file(folder)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))


def drop_a_file(folder: Path) -> None:
    largest_data_file(folder).unlink()


def break_the_manifest(folder: Path) -> None:
    (folder / MANIFEST).write_text((folder / MANIFEST).read_text()[:40])


def drop_the_manifest(folder: Path) -> None:
    (folder / MANIFEST).unlink()


def another_kind(folder: Path) -> None:
    text = (folder / MANIFEST).read_text()
    (folder / MANIFEST).write_text(text.replace('"kind": "', '"kind": "other-', 1))


@pytest.mark.parametrize(
    "damage", [truncate, flip_a_byte, drop_a_file, break_the_manifest, drop_the_manifest, another_kind]
)
def test_a_damaged_saved_index_is_detected_and_the_index_left_as_it_was(impl, tmp_path, damage):
    _, folder = saved(impl, tmp_path)
    damage(folder)
    index = Corpus.random(20, 2).fill(impl.make())
    before = searches(index)
    with pytest.raises(IndexFileError) as caught:
        index.load(folder)
    assert caught.value.code == "index_file_invalid" and str(folder) in caught.value.message
    assert len(index) == 20 and searches(index) == before


def test_a_stale_saved_index_is_detected(impl, tmp_path):
    _, folder = saved(impl, tmp_path)
    with pytest.raises(IndexFileError, match="stale"):
        impl.make().load(folder, version=18)
    with pytest.raises(IndexFileError, match="missing"):
        impl.make().load(tmp_path / "never-saved")


def test_the_old_name_is_the_exact_index():
    assert DenseIndex is ExactIndex


def test_the_store_builds_searches_and_updates_the_index_it_is_given(tmp_path):
    """The store reaches the dense leg through the seam only, so another implementation drops in by its factory."""
    from rag.schemas import ChunkRecord
    from rag.store import ChromaStore

    calls: list[str] = []

    class Recording(ExactIndex):
        def add(self, ids, doc_ids, vectors):  # noqa: ANN001, ANN201
            calls.append("add")
            super().add(ids, doc_ids, vectors)

        def remove(self, ids):  # noqa: ANN001, ANN201
            calls.append("remove")
            super().remove(ids)

        def search(self, query, top_k, allowed_docs=None):  # noqa: ANN001, ANN201
            calls.append("search")
            return super().search(query, top_k, allowed_docs)

    def records(doc: str, n: int) -> list[ChunkRecord]:
        return [ChunkRecord(id=f"{doc}-{i}", text=doc, embed_text=doc, metadata={"doc_id": doc}) for i in range(n)]

    corpus = Corpus.random(6, 1)
    store = ChromaStore(tmp_path / "chroma", "seam", new_index=Recording)
    try:
        store.upsert(records("a", 3), corpus.vectors[:3].tolist())
        assert calls == [] and ids_of(store.dense_search(corpus.vectors[1], 1)) == ["a-1"]
        assert calls == ["add", "search"] and isinstance(store.index, Recording)  # loaded from Chroma, then searched
        store.upsert(records("b", 3), corpus.vectors[3:].tolist())
        store.delete(["a-1"])
        assert calls[2:] == ["add", "remove"]
        assert ids_of(store.dense_search(corpus.vectors[4], 1, ["b"])) == ["b-1"]
    finally:
        store.close()
