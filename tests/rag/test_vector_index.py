"""The in-memory exact index and both fusion methods, against hand-computed values."""

import pytest

from rag.retrieval import Retriever, distribution_based_score_fusion, reciprocal_rank_fusion
from rag.settings import RetrievalSettings
from rag.vector_index import ExactIndex


def test_exact_search_replace_remove_and_document_mask():
    index = ExactIndex()
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


def test_distribution_based_score_fusion_by_hand():
    dense = [("a", 0.9), ("b", 0.5), ("c", 0.4)]  # mean 0.6, sd 0.216
    keyword = [("b", 10.0), ("d", 9.0)]  # mean 9.5, sd 0.5
    fused = distribution_based_score_fusion({"dense": dense, "keyword": keyword}, {"dense": 1.0, "keyword": 0.5})
    scores = {cid: score for cid, score, _ in fused}
    sd = (((0.3**2) + (0.1**2) + (0.2**2)) / 3) ** 0.5
    assert scores["a"] == pytest.approx(0.3 / (6 * sd) + 0.5)
    assert scores["b"] == pytest.approx(-0.1 / (6 * sd) + 0.5 + 0.5 * (0.5 / 3 + 0.5))
    assert scores["c"] == pytest.approx(-0.2 / (6 * sd) + 0.5)
    assert scores["d"] == pytest.approx(0.5 * (-0.5 / 3 + 0.5))
    assert [cid for cid, _, _ in fused] == ["b", "a", "c", "d"]
    assert fused[0][2] == {"dense": 2, "keyword": 1}
    # A leg whose scores are all equal puts them mid-scale; an empty leg adds nothing.
    flat = distribution_based_score_fusion({"dense": [("x", 0.3), ("y", 0.3)], "keyword": []}, {})
    assert [(cid, score) for cid, score, _ in flat] == [("x", 0.5), ("y", 0.5)]


def test_score_fusion_keeps_a_decisive_margin_that_rank_fusion_loses():
    """The bundled set's e51 in miniature: the dense leg is sure of "gold" (far ahead), the keyword leg is not
    (close scores, gold 5th). Rank fusion lets a chunk that both legs put second overtake it; score fusion does
    not. The setting picks the method."""
    legs = {
        "dense": [("gold", 0.9), ("other", 0.45), ("c", 0.42), ("d", 0.40), ("e", 0.38)],
        "keyword": [("f", 5.0), ("other", 4.95), ("g", 4.9), ("h", 4.85), ("gold", 4.8)],
    }

    def first(fusion: str) -> str:
        retriever = Retriever(None, None, RetrievalSettings(fusion=fusion))  # type: ignore[arg-type]
        return retriever.fuse(legs)[0][0]

    assert first("rrf") == "other"
    assert first("dbsf") == "gold"
    assert RetrievalSettings().fusion == "dbsf"
