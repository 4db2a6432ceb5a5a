"""Context packing: near-duplicates dropped, neighbours merged without the repeated overlap, best first."""

from rag.packing import join_overlapping, near_duplicate, pack
from rag.schemas import RetrievedChunk


def chunk(cid: str, doc: str, index: int, text: str, score: float = 0.5) -> RetrievedChunk:
    return RetrievedChunk(id=cid, text=text, score=score, metadata={"doc_id": doc, "chunk_index": index})


def test_near_duplicates_are_dropped_and_the_better_ranked_one_stays():
    policy = "Staff may work remotely from another country for up to 20 working days per calendar year."
    copy = "Staff may work remotely from another country for up to 20 working days per calendar year!"
    other = "The canteen opens at noon and closes at half past two in the afternoon on weekdays."
    packed = pack([chunk("a", "d1", 0, policy), chunk("b", "d2", 3, copy), chunk("c", "d3", 0, other)])
    assert [c.id for c in packed] == ["a", "c"]
    assert near_duplicate("short fact here", "A longer text that has the short fact here inside it.") is True
    assert near_duplicate(policy, other) is False


def test_neighbours_merge_without_the_overlap_and_order_follows_the_best_rank():
    first = "Laptops are replaced every 3 years. Request a new one through the service desk"
    second = "through the service desk portal, under Hardware. Old laptops are wiped and recycled."
    unrelated = "Expense claims need a receipt for anything over 25 euros, scanned or photographed."
    packed = pack([chunk("x", "hr", 5, unrelated), chunk("b", "it", 8, second, 0.7), chunk("a", "it", 7, first, 0.6)])
    assert [c.id for c in packed] == ["x", "b"]  # the merged passage ranks where its best chunk ranked
    merged = packed[1]
    assert merged.text == (
        "Laptops are replaced every 3 years. Request a new one through the service desk portal, under Hardware. "
        "Old laptops are wiped and recycled."
    )
    assert merged.metadata["merged_chunks"] == "a,b" and merged.score == 0.7


def test_chunks_that_are_not_adjacent_stay_apart():
    packed = pack([chunk("a", "d", 1, "Alpha beta gamma delta."), chunk("b", "d", 3, "Epsilon zeta eta theta.")])
    assert [c.id for c in packed] == ["a", "b"] and "merged_chunks" not in packed[0].metadata


def test_join_overlapping_without_an_overlap_keeps_both_texts():
    assert join_overlapping("One two three.", "Four five six.") == "One two three.\nFour five six."
    assert join_overlapping("the quick brown fox jumps over", "fox jumps over the lazy dog", min_overlap=5) == (
        "the quick brown fox jumps over the lazy dog"
    )
