"""The in-memory exact index and reciprocal rank fusion, against hand-computed values."""

import pytest

from rag.retrieval import reciprocal_rank_fusion
from rag.vector_index import DenseIndex


def test_exact_search_replace_remove_and_document_mask():
    index = DenseIndex()
    index.add(["a", "b", "c"], ["d1", "d1", "d2"], [[1, 0], [0.6, 0.8], [0, 2]])  # normalised on the way in
    assert [cid for cid, _ in index.search([1, 0], 3)] == ["a", "b", "c"]
    assert index.search([1, 0], 1)[0] == ("a", pytest.approx(1.0))
    assert index.search([0, 1], 3)[0] == ("c", pytest.approx(1.0))
    assert [cid for cid, _ in index.search([1, 0], 3, allowed_docs=["d2"])] == ["c"]  # filter before top-k
    assert index.search([1, 0], 3, allowed_docs=[]) == [] and index.search([1, 0], 3, ["nope"]) == []
    index.add(["a"], ["d2"], [[0, 1]])  # replaced: new vector, new document
    assert [cid for cid, _ in index.search([1, 0], 3, ["d1"])] == ["b"]
    index.remove(["c", "missing"])
    assert len(index) == 2 and "c" not in {cid for cid, _ in index.search([0, 1], 5)}
    index.add(["e"], ["d3"], [[1, 1]])  # reuses the freed row
    assert [cid for cid, _ in index.search([1, 1], 1)] == ["e"] and len(index) == 3
    with pytest.raises(ValueError, match="dimensions"):
        index.add(["f"], ["d1"], [[1, 0, 0]])


def test_reciprocal_rank_fusion_by_hand():
    fused = reciprocal_rank_fusion({"dense": ["a", "b"], "keyword": ["b", "c"]}, {"dense": 1.0, "keyword": 0.5}, 60)
    scores = {cid: score for cid, score, _ in fused}
    assert scores["a"] == pytest.approx(1 / 61)
    assert scores["b"] == pytest.approx(1 / 62 + 0.5 / 61)
    assert scores["c"] == pytest.approx(0.5 / 62)
    assert [cid for cid, _, _ in fused] == ["b", "a", "c"]
    assert fused[0][2] == {"dense": 2, "keyword": 1}
