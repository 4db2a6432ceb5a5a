"""The reranker's contract (``rag.seams.Reranker``), written once as ``RerankerContract`` and run over every
implementation: the cross-encoder (``CrossEncoderReranker``, on the tiny random-weight model of
``tiny_cross_encoder``) and a word-overlap fake. An implementation is a subclass giving ``make_reranker``, a
factory of rerankers by threshold."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from rag.rerank import CrossEncoderReranker
from rag.schemas import RetrievedChunk
from rag.seams import Reranker

TEXTS = [
    "The travel policy covers trains in second class.",
    "Holiday allowance is 25 days a year.",
    "Travel by plane needs a manager's approval under the travel policy.",
    "The canteen opens at noon.",
    "Policy on travel expenses: keep every receipt.",
]
QUERY = "travel policy"


def candidates() -> list[RetrievedChunk]:
    return [RetrievedChunk(id=f"c{i}", text=t, score=0.5, metadata={"doc_id": f"d{i}"}) for i, t in enumerate(TEXTS)]


class WordOverlapReranker:
    """A fake reranker: the share of the query's words in the chunk's text."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def load(self) -> None:
        pass

    def rerank(self, query: str, chunks: Sequence[RetrievedChunk]) -> list[RetrievedChunk]:
        words = set(query.lower().split())
        kept = []
        for chunk in chunks:
            chunk.rerank = len(words & set(chunk.text.lower().replace(".", " ").split())) / max(len(words), 1)
            if chunk.rerank >= self.threshold:
                kept.append(chunk)
        return sorted(kept, key=lambda c: -(c.rerank or 0.0))


class RerankerContract:
    """Every reranker passes these: it only ever narrows and orders the permitted candidates it is given."""

    def test_nothing_in_nothing_out(self, make_reranker: Callable[[float], Reranker]):
        assert make_reranker(float("-inf")).rerank(QUERY, []) == []

    def test_keeps_only_the_given_chunks_best_first_each_scored(self, make_reranker: Callable[[float], Reranker]):
        reranker = make_reranker(float("-inf"))
        reranker.load()
        reranker.load()  # loading twice is harmless
        ranked = reranker.rerank(QUERY, candidates())
        assert sorted(c.id for c in ranked) == sorted(c.id for c in candidates())  # none added, none lost
        assert all(c.rerank is not None for c in ranked)
        assert [c.rerank for c in ranked] == sorted((c.rerank for c in ranked), reverse=True)
        assert {c.id: c.text for c in ranked} == {c.id: c.text for c in candidates()}  # texts untouched

    def test_drops_the_chunks_under_the_threshold(self, make_reranker: Callable[[float], Reranker]):
        scores = {c.id: c.rerank for c in make_reranker(float("-inf")).rerank(QUERY, candidates())}
        ordered = sorted(set(scores.values()))
        threshold = (ordered[0] + ordered[1]) / 2  # between two scores: rounding cannot move one across it
        kept = make_reranker(threshold).rerank(QUERY, candidates())
        assert {c.id for c in kept} == {cid for cid, score in scores.items() if score > threshold}
        assert 0 < len(kept) < len(TEXTS)

    def test_the_same_input_gets_the_same_scores(self, make_reranker: Callable[[float], Reranker]):
        reranker = make_reranker(float("-inf"))
        first = [(c.id, c.rerank) for c in reranker.rerank(QUERY, candidates())]
        assert [(c.id, c.rerank) for c in reranker.rerank(QUERY, candidates())] == first


class TestCrossEncoderReranker(RerankerContract):
    @pytest.fixture
    def make_reranker(self, tiny_cross_encoder: Path) -> Callable[[float], Reranker]:
        return lambda threshold: CrossEncoderReranker(tiny_cross_encoder, threshold)


class TestWordOverlapReranker(RerankerContract):
    @pytest.fixture
    def make_reranker(self) -> Callable[[float], Reranker]:
        return WordOverlapReranker
