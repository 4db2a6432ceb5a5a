"""What the IVF index does beyond the shared contract (tests/contracts): when it trains, which path a search takes,
and how a memory-mapped loaded copy takes writes (faiss cannot add to a mapped index, so new rows wait on the
exact side until the next save)."""

from __future__ import annotations

import numpy as np

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
        store = build_store(Settings(data_dir=tmp_path / choice, retrieval=retrieval))
        try:
            index = store.keeper._new_index()
            assert type(index) is kind
            if kind is IvfIndex:
                assert (index.min_rows, index.exact_below, index.nprobe) == (10, 5, 3)
        finally:
            store.close()
    assert Settings(data_dir=tmp_path).retrieval.dense_index == "exact"
