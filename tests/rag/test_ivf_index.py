"""What the IVF index does beyond the shared contract (tests/contracts): when it trains, which path a search takes,
and how a memory-mapped loaded copy takes writes (faiss cannot add to a mapped index, so new rows wait on the
exact side until the next save)."""

from __future__ import annotations

import numpy as np
import pytest

from rag.errors import IndexFileError
from rag.ivf_index import IvfIndex

DIM = 16


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def filled(n: int = 1500, docs: int = 10) -> tuple[IvfIndex, np.ndarray]:
    vectors = np.random.default_rng(4).normal(size=(n, DIM)).astype("f4")
    index = IvfIndex(min_rows=1000, exact_below=50, nprobe=4)
    index.add([f"c{i}" for i in range(n)], [f"d{i % docs}" for i in range(n)], vectors)
    return index, vectors


def test_it_trains_only_past_min_rows_and_answers_exactly_before():
    index = IvfIndex(min_rows=1000)
    vectors = np.random.default_rng(1).normal(size=(1000, DIM)).astype("f4")
    index.add([f"c{i}" for i in range(1000)], ["d"] * 1000, vectors)
    assert not index.trained
    best = int(np.argmax(unit(vectors) @ unit(vectors[3])))
    assert index.search(vectors[3], 1)[0][0] == f"c{best}"
    index.add(["extra"], ["d"], [vectors[0]])
    assert index.trained


def test_a_replaced_or_removed_chunk_is_never_found_by_its_old_vector_through_the_ivf():
    index, vectors = filled()
    query = vectors[10]
    index.add(["c10"], ["d0"], [-query])  # replaced: its old label is stale
    index.remove(["c11"])
    for _ in range(3):
        got = [cid for cid, _ in index.search(query, 20)]  # 1,500 permitted rows: the IVF path
        assert "c10" not in got and "c11" not in got and len(got) == 20


def test_a_loaded_copy_is_mapped_and_takes_writes_beside_it_until_the_next_save(tmp_path):
    index, vectors = filled()
    index.save(tmp_path / "a", version=1)
    loaded = IvfIndex(min_rows=1000, exact_below=50, nprobe=4)
    assert loaded.load(tmp_path / "a") == 1 and loaded.trained and loaded._mapped
    target = unit(np.ones(DIM, dtype="f4"))
    loaded.add(["new"], ["d3"], [target])  # pending: not in the mapped faiss index
    loaded.add(["c5"], ["d3"], [target * 0.5 + unit(vectors[5])])  # replaced: stale label plus a pending row
    hits = loaded.search(target, 5)  # every chunk permitted: the IVF path, with the pending rows scanned beside it
    assert hits[0][0] == "new" and hits[0][1] > 0.999
    assert "new" in [cid for cid, _ in loaded.search(target, 5, ["d3", "d4", "d5"])]
    loaded.save(tmp_path / "b", version=2)  # the mapped index copied into memory, the pending rows added
    assert not loaded._mapped and loaded.search(target, 1)[0][0] == "new"
    again = IvfIndex(min_rows=1000, exact_below=50, nprobe=4)
    assert again.load(tmp_path / "b") == 2 and again._mapped
    assert again.search(target, 1)[0][0] == "new" and len(again) == 1501
    assert (again._row_label[: again._size] >= 0).all()  # nothing pending after that save


def test_the_setting_chooses_the_store_s_index(tmp_path):
    from rag.container import build_store
    from rag.settings import Settings
    from rag.vector_index import ExactIndex

    for choice, kind in (("exact", ExactIndex), ("ivf", IvfIndex)):
        retrieval = {"dense_index": choice, "ivf_min_rows": 10, "ivf_exact_below": 5, "ivf_nprobe": 3}
        retrieval["ivf_codec"] = "sq8"
        store = build_store(Settings(data_dir=tmp_path / choice, retrieval=retrieval))
        try:
            index = store.keeper._new_index()
            assert type(index) is kind
            if kind is IvfIndex:
                assert (index.min_rows, index.exact_below, index.nprobe, index.codec) == (10, 5, 3, "sq8")
        finally:
            store.close()
    assert Settings(data_dir=tmp_path).retrieval.dense_index == "exact"


def exact_top(vectors: np.ndarray, live: dict[int, str], query: np.ndarray, k: int, allowed: set[str]) -> list[str]:
    scores = unit(vectors) @ unit(query)
    return [f"c{i}" for i in np.argsort(-scores, kind="stable") if i in live and live[i] in allowed][:k]


def test_a_save_retrains_once_stale_labels_pass_a_fifth_and_filtered_results_stay_right(tmp_path):
    index, vectors = filled(1500, docs=10)
    assert index._trained_on == 1500
    index.remove([f"c{i}" for i in range(0, 200)])
    index.add([f"c{i}" for i in range(200, 280)], ["d9"] * 80, vectors[200:280])  # replaced: stale labels too
    assert not index.needs_retraining()  # 280 stale of 1,580 entries: kept, stale labels and all
    index.save(tmp_path / "a")
    assert index._trained_on == 1500 and int((index._label_row < 0).sum()) == 280
    index.remove([f"c{i}" for i in range(280, 400)])  # 400 of 1,580: over the bar
    assert index.needs_retraining()
    index.save(tmp_path / "b")
    assert index._trained_on == 1180 and index._ann.ntotal == 1180 and (index._label_row >= 0).all()

    loaded = IvfIndex(min_rows=1000, exact_below=50, nprobe=64)
    loaded.load(tmp_path / "b")
    assert loaded._trained_on == 1180 and not loaded.needs_retraining()
    live = {i: ("d9" if 200 <= i < 280 else f"d{i % 10}") for i in range(200, 1500) if not 280 <= i < 400}
    rng = np.random.default_rng(8)
    for allowed in ({"d9"}, {"d1", "d2"}, {"d3", "d9", "d7"}, {f"d{i}" for i in range(10)}):
        for query in rng.normal(size=(5, DIM)).astype("f4"):
            got = [cid for cid, _ in loaded.search(query, 10, sorted(allowed))]
            assert all(live[int(c[1:])] in allowed for c in got) and len(got) == 10
            assert got == exact_top(vectors, live, query, 10, allowed)  # every list probed: exact


def test_a_save_retrains_once_the_rows_have_grown_four_times(tmp_path):
    vectors = np.random.default_rng(6).normal(size=(4004, DIM)).astype("f4")
    index = IvfIndex(min_rows=1000, exact_below=50, nprobe=4)
    index.add([f"c{i}" for i in range(1001)], ["d"] * 1001, vectors[:1001])
    assert index._trained_on == 1001 and index._ann.nlist == 16
    index.add([f"c{i}" for i in range(1001, 4003)], ["d"] * 3002, vectors[1001:4003])
    assert not index.needs_retraining()
    index.add(["c4003"], ["d"], vectors[4003:])
    assert index.needs_retraining()
    index.save(tmp_path)  # more lists for more rows
    assert index._trained_on == 4004 and index._ann.nlist == 64 and index._ann.ntotal == 4004
    assert index.search(vectors[4003], 1)[0][0] == "c4003"


def test_sq8_lists_load_mapped_and_a_copy_of_another_codec_is_refused(tmp_path):
    vectors = np.random.default_rng(5).normal(size=(1500, DIM)).astype("f4")
    index = IvfIndex(min_rows=1000, exact_below=50, nprobe=4, codec="sq8")
    index.add([f"c{i}" for i in range(1500)], [f"d{i % 10}" for i in range(1500)], vectors)
    index.save(tmp_path)
    import faiss

    loaded = IvfIndex(min_rows=1000, exact_below=50, nprobe=4, codec="sq8")
    loaded.load(tmp_path)
    assert loaded._mapped and isinstance(loaded._ann, faiss.IndexIVFScalarQuantizer)
    hits = loaded.search(vectors[7], 3)  # candidates from the 8-bit lists, scored exactly
    assert hits[0][0] == "c7" and abs(hits[0][1] - 1.0) < 1e-5
    with pytest.raises(IndexFileError, match="'sq8' faiss index, not 'flat'"):
        IvfIndex(min_rows=1000).load(tmp_path)
    with pytest.raises(ValueError, match="codec"):
        IvfIndex(codec="pq")


def test_a_save_with_too_few_rows_left_drops_the_ivf_and_trains_again_past_min_rows(tmp_path):
    index, vectors = filled(1500, docs=10)
    index.remove([f"c{i}" for i in range(600)])  # 900 left: at most min_rows
    index.save(tmp_path / "a")
    assert not index.trained and len(index) == 900
    loaded = IvfIndex(min_rows=1000, exact_below=50, nprobe=4)
    loaded.load(tmp_path / "a")
    assert not loaded.trained and loaded.search(vectors[700], 1)[0][0] == "c700"
    loaded.add([f"c{i}" for i in range(200)], ["d0"] * 200, vectors[:200])
    assert loaded.trained and loaded.search(vectors[5], 1, ["d0"])[0][0] == "c5"
    loaded.remove([f"c{i}" for i in range(1500)])
    loaded.save(tmp_path / "b")  # nothing left at all
    assert not loaded.trained and loaded.search(vectors[5], 3) == []


def test_writes_made_while_a_new_ivf_trains_are_in_it_once_it_is_swapped_in(monkeypatch):
    """Training and filling run outside the lock; these writes land after the rows were read, before the swap."""
    import faiss

    from rag.vector_index import ExactIndex

    rng = np.random.default_rng(9)
    vectors = rng.normal(size=(1200, DIM)).astype("f4")
    ids, docs = [f"c{i}" for i in range(1200)], [f"d{i % 12}" for i in range(1200)]
    index, exact = IvfIndex(min_rows=1000, exact_below=0, nprobe=10_000), ExactIndex()  # every list probed
    exact.add(ids, docs, vectors)
    index.add(ids[:1000], docs[:1000], vectors[:1000])  # not trained yet: exactly min_rows
    new_vectors = rng.normal(size=(5, DIM)).astype("f4")
    real = faiss.IndexIVFFlat

    class WritesWhileFilling(real):
        written = False

        def add_with_ids(self, x, labels):  # noqa: ANN001, ANN202 - after the rows were read, before the swap
            if not self.written:
                self.written = True
                index.remove(["c3", "c4"])  # removed
                index.add(["c5", "c6"], ["d5", "d6"], new_vectors[:2])  # replaced
                index.add(["new0", "new1", "new2"], ["d0", "d1", "d2"], new_vectors[2:])  # added
            return real.add_with_ids(self, x, labels)

    monkeypatch.setattr(faiss, "IndexIVFFlat", WritesWhileFilling)
    index.add(ids[1000:], docs[1000:], vectors[1000:])  # past min_rows: trains, with the writes in the middle
    assert index.trained and index._journal is None
    exact.remove(["c3", "c4"])
    exact.add(["c5", "c6"], ["d5", "d6"], new_vectors[:2])
    exact.add(["new0", "new1", "new2"], ["d0", "d1", "d2"], new_vectors[2:])
    for q in [*rng.normal(size=(10, DIM)).astype("f4"), *new_vectors, vectors[3], vectors[5]]:
        for allowed in (None, ["d0", "d5"], ["d3", "d4", "d6"], ["d1"]):
            assert [c for c, _ in index.search(q, 8, allowed)] == [c for c, _ in exact.search(q, 8, allowed)]


def test_a_caller_s_cached_filter_follows_every_change_of_the_index():
    index, vectors = filled()  # trained; 10 documents of 150 rows: the IVF path serves a 2-document caller
    allowed = ["d1", "d2"]  # one list object, as the retriever hands its cached list to every search of a caller
    queries = np.random.default_rng(5).normal(size=(5, DIM)).astype("f4")

    def same_as_a_fresh_list() -> None:
        for q in queries:
            assert index.search(q, 10, allowed) == index.search(q, 10, list(allowed))

    same_as_a_fresh_list()
    index.add(["x"], ["d1"], [queries[0]])  # a new permitted row, nearest to the query
    assert index.search(queries[0], 1, allowed)[0][0] == "x"
    index.add(["y"], ["d7"], [queries[1]])  # a new forbidden row, nearest to the query
    assert "y" not in [c for c, _ in index.search(queries[1], 10, allowed)]
    index.remove(["x"])
    assert "x" not in [c for c, _ in index.search(queries[0], 10, allowed)]
    index.add(["c1"], ["d1"], [queries[2]])  # replaced: found by its new vector
    assert index.search(queries[2], 1, allowed)[0][0] == "c1"
    index.retrain()
    same_as_a_fresh_list()
    assert all(int(c[1:]) % 10 in (1, 2) for c, _ in index.search(queries[1], 50, allowed))  # c<row>: doc row % 10
