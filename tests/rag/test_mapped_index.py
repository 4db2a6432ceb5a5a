"""A loaded search index shares its big arrays between workers (issue 16): vectors and ids are memory-mapped
read-only from the saved files, and every write after a load goes to memory (a dead mark, a tail row), never into
a file another worker maps. Ids are found by binary search of the mapped, sorted id array."""

from __future__ import annotations

import hashlib
import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from rag.errors import IndexFileError
from rag.index_files import MANIFEST, save_index
from rag.ivf_index import IvfIndex
from rag.vector_index import ExactIndex

DIM = 16
MAKERS = {
    "exact": ExactIndex,
    "ivf": partial(IvfIndex, min_rows=1000, exact_below=50, nprobe=4),
    "ivf-sq8": partial(IvfIndex, min_rows=1000, exact_below=50, nprobe=4, codec="sq8"),
}


@pytest.fixture(params=list(MAKERS))
def make(request):  # noqa: ANN001, ANN201 - pytest's request; the index factory
    return MAKERS[request.param]


def random(n: int, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype("f4")


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def same(hits: list[tuple[str, float]], want: list[tuple[str, float]]) -> bool:
    """The same chunks in the same order, the same scores but for float rounding."""
    return [c for c, _ in hits] == [c for c, _ in want] and np.allclose([s for _, s in hits], [s for _, s in want])


def writes(index, vectors: np.ndarray) -> None:  # noqa: ANN001 - any SearchIndex
    """Every kind of write after a load: a base row removed, a base row replaced (another document), a new row,
    a new row replaced, a new row removed, an id given twice in one call."""
    index.remove(["c1", "c1", "nope"])
    index.add(["c2"], ["d-moved"], [vectors[0]])
    index.add(["new", "twice", "twice"], ["d-new", "d-new", "d-new"], vectors[1:4])
    index.add(["new"], ["d-new"], [vectors[4]])
    index.add(["gone"], ["d-new"], [vectors[5]])
    index.remove(["gone"])


def test_writes_after_a_load_go_to_memory_and_searches_see_them(make, tmp_path):
    n = 1500
    base = random(n)
    ids, docs = [f"c{i}" for i in range(n)], [f"d{i % 60}" for i in range(n)]  # 25 rows a document
    original = make()
    original.add(ids, docs, base)
    original.save(tmp_path / "a", version=1)
    before = digests(tmp_path / "a")

    loaded = make()
    loaded.load(tmp_path / "a")
    assert isinstance(loaded._base, np.memmap) and not loaded._base.flags.writeable
    assert isinstance(loaded._base_ids, np.memmap) and not loaded._base_ids.flags.writeable
    reference = ExactIndex()  # the same rows and writes, never saved: the exact answers
    reference.add(ids, docs, base)
    extra = random(6, seed=3)
    writes(loaded, extra)
    writes(reference, extra)

    assert digests(tmp_path / "a") == before  # no file written to
    assert len(loaded) == len(reference) == n + 1  # c1 gone; new and twice added
    want = reference.vectors(["c1", "c2", "new", "twice", "gone", "c3"])
    got = loaded.vectors(["c1", "c2", "new", "twice", "gone", "c3"])
    assert set(got) == set(want) == {"c2", "new", "twice", "c3"}
    assert all(np.array_equal(got[i], want[i]) for i in want)
    for query in (*extra, *random(5, seed=4)):
        for allowed in (["d-moved"], ["d-new", "d3"], ["d2", "d-moved"]):  # few permitted rows: exact in every kind
            assert same(loaded.search(query, 10, allowed), reference.search(query, 10, allowed))
        assert not {"c1", "gone"} & {cid for cid, _ in loaded.search(query, 50)}
    assert loaded.search(extra[4], 1)[0][0] == "new" and loaded.search(extra[0], 1, ["d2"]) != [("c2", 1.0)]

    again = make()  # the saved copy is as it was
    assert again.load(tmp_path / "a") == 1 and len(again) == n and set(again.vectors(["c1", "new"])) == {"c1"}
    loaded.save(tmp_path / "b", version=2)  # the tail and the dead marks, compacted into a new copy
    after = make()
    after.load(tmp_path / "b")
    queries = random(8, seed=5)
    for allowed in (None, ["d-new", "d3"], [f"d{i}" for i in range(0, 30, 3)]):
        assert all(same(after.search(q, 10, allowed), loaded.search(q, 10, allowed)) for q in queries)


def test_another_worker_saving_leaves_a_loaded_copy_working(make, tmp_path):
    """A save unlinks the previous copy's files; a worker that has them mapped goes on reading them."""
    vectors = random(1200)
    index = make()
    index.add([f"c{i}" for i in range(1200)], [f"d{i % 12}" for i in range(1200)], vectors)
    index.save(tmp_path, version=1)
    reader, writer = make(), make()
    reader.load(tmp_path)
    writer.load(tmp_path)
    expected = [reader.search(q, 10, a) for q in vectors[:5] for a in (None, ["d1"])]
    writer.remove([f"c{i}" for i in range(600)])
    writer.save(tmp_path, version=2)
    mapped = Path(reader._base.filename).name
    assert not (tmp_path / mapped).exists()  # unlinked, still mapped
    assert [reader.search(q, 10, a) for q in vectors[:5] for a in (None, ["d1"])] == expected
    assert len(reader) == 1200 and len(writer) == 600


def test_ids_of_every_length_and_script_are_found_after_a_load(tmp_path):
    ids = ["a", "ab", "abc-é-😀", "x" * 50, "", "b", "a b"]
    index = ExactIndex()
    index.add(ids, ["d"] * len(ids), random(len(ids)))
    index.save(tmp_path)
    loaded = ExactIndex()
    loaded.load(tmp_path)
    assert set(loaded.vectors(ids)) == set(ids)
    assert loaded.vectors(["abc", "abc-é", "x" * 51, "x" * 49, "c", "a b "]) == {}
    loaded.add(["y" * 80], ["d"], random(1, seed=9))  # longer than the saved ids: a tail row
    assert set(loaded.vectors(["y" * 80, "y" * 50])) == {"y" * 80} and len(loaded) == len(ids) + 1
    assert {cid for cid, _ in loaded.search(np.ones(DIM), 100)} == set(ids) | {"y" * 80}
    with pytest.raises(ValueError, match="NUL"):
        loaded.add(["a\0"], ["d"], random(1))


def write_copy(folder: Path, ids: list[bytes], order: list[int]) -> None:
    n = len(ids)
    arrays = {
        "vectors": np.eye(n, 4, dtype=np.float32),
        "doc_of": np.zeros(n, dtype=np.int32),
        "ids": np.array(ids, dtype="S"),
        "id_order": np.array(order, dtype=np.int64),
    }
    save_index(folder, "exact", 0, arrays, {"docs": ["d"]}, {"count": n, "dim": 4})


def test_an_id_order_that_does_not_sort_the_ids_is_refused(tmp_path):
    write_copy(tmp_path / "ok", [b"b", b"a", b"c"], [1, 0, 2])
    assert ExactIndex().load(tmp_path / "ok") == 0
    for name, ids, order in (("unsorted", [b"b", b"a"], [0, 1]), ("twice", [b"a", b"a"], [0, 1])):
        write_copy(tmp_path / name, ids, order)
        with pytest.raises(IndexFileError, match="one id"):
            ExactIndex().load(tmp_path / name)
    write_copy(tmp_path / "outside", [b"a", b"b"], [0, 2])
    with pytest.raises(IndexFileError, match="one id"):
        ExactIndex().load(tmp_path / "outside")


def test_a_copy_of_the_previous_format_is_refused_so_the_keeper_rebuilds(tmp_path):
    index = ExactIndex()
    index.add(["a"], ["d"], random(1))
    index.save(tmp_path)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    (tmp_path / MANIFEST).write_text(json.dumps(manifest | {"format_version": 1}))
    with pytest.raises(IndexFileError, match="format version 1"):
        ExactIndex().load(tmp_path)
