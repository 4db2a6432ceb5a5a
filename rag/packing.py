"""Context packing: what the model reads, built from the retrieved chunks.

- Near-duplicates are dropped (the same paragraph in two files, or two versions of a policy): the better ranked
  one stays.
- Neighbouring chunks of one document (consecutive ``chunk_index``) are merged into one passage, without the
  overlap the chunker repeated between them, so a fact split across a chunk boundary reads whole.
- Passages are ordered by their best rank, so the strongest evidence comes first.

Fitting the model's context window (counted in its own tokens, leaving room for the answer) happens in the
answer service, which drops the weakest passages until the prompt fits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rag.schemas import RetrievedChunk

_WORD = re.compile(r"\w+")


def shingles(text: str, size: int = 3) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    if len(words) < size:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}


def near_duplicate(a: str, b: str, threshold: float = 0.85) -> bool:
    """True when the word 3-shingles of ``a`` and ``b`` overlap by ``threshold`` or more (Jaccard), or one
    text's shingles lie almost wholly inside the other's (a short chunk repeated inside a longer one)."""
    sa, sb = shingles(a), shingles(b)
    if not sa or not sb:
        return a.strip() == b.strip()
    common = len(sa & sb)
    return common / len(sa | sb) >= threshold or common / min(len(sa), len(sb)) >= 0.95


def join_overlapping(first: str, second: str, min_overlap: int = 20) -> str:
    """``first`` then ``second``, without the text the chunker repeated at the start of ``second``."""
    limit = min(len(first), len(second))
    for size in range(limit, min_overlap - 1, -1):
        if first.endswith(second[:size]):
            return first + second[size:]
    return first.rstrip() + "\n" + second.lstrip()


def _index(chunk: RetrievedChunk) -> int | None:
    value = chunk.metadata.get("chunk_index")
    return int(value) if isinstance(value, int | float) else None


def pack(
    chunks: Sequence[RetrievedChunk], duplicate_threshold: float = 0.85, merge: bool = True
) -> list[RetrievedChunk]:
    """Drop near-duplicates, merge neighbours of one document (unless ``merge`` is false), order by best rank.
    Input: best first."""
    kept: list[RetrievedChunk] = []
    for chunk in chunks:
        if not any(near_duplicate(chunk.text, other.text, duplicate_threshold) for other in kept):
            kept.append(chunk)
    if not merge:
        return kept
    rank = {c.id: i for i, c in enumerate(kept)}
    by_doc: dict[str, list[RetrievedChunk]] = {}
    for chunk in kept:
        by_doc.setdefault(str(chunk.metadata.get("doc_id", chunk.id)), []).append(chunk)
    passages: list[tuple[int, RetrievedChunk]] = []
    for group in by_doc.values():
        group.sort(key=lambda c: (_index(c) is None, _index(c) or 0))
        run: list[RetrievedChunk] = [group[0]]
        for chunk in group[1:]:
            previous = _index(run[-1])
            if previous is not None and _index(chunk) == previous + 1:
                run.append(chunk)
            else:
                passages.append(_merge(run, rank))
                run = [chunk]
        passages.append(_merge(run, rank))
    return [passage for _, passage in sorted(passages, key=lambda item: item[0])]


def _merge(run: list[RetrievedChunk], rank: dict[str, int]) -> tuple[int, RetrievedChunk]:
    best = min(run, key=lambda c: rank[c.id])
    if len(run) == 1:
        return rank[best.id], best
    text = run[0].text
    for chunk in run[1:]:
        text = join_overlapping(text, chunk.text)
    merged = best.model_copy(deep=True)
    merged.text = text
    merged.score = max(c.score for c in run)
    merged.metadata["merged_chunks"] = ",".join(c.id for c in run)
    return rank[best.id], merged
