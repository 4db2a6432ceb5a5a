"""The keyword leg of a large store (issue 16, item 5): BM25 over the caller's chunks with the caller's statistics,
as ``KeywordIndex.keyword_search``, in milliseconds at a million chunks.

The exact path spends its time on Python rows: a row per matching chunk and per occurrence (fts5vocab), and an SQL
count over the caller's chunks for their statistics. Here:

- per-process arrays (rebuilt when chunks change, in this process or, through ``vectors_version``, another): each
  chunk row's document and length, and each document's chunk count and total length. A caller's chunk count and
  mean length are sums over their documents, their chunks a mask over documents (cached per access generation);
- a word's chunks come back as one string from SQLite (``group_concat(rowid)``), parsed by numpy and filtered by
  the caller's mask: how many of the caller's chunks hold it is exact, so are idf and the "too common" decision;
- BM25 exactly as the exact path computes it (same words chosen, same sums in the same order, so the same
  floats): tf from each chosen word's occurrences (fts5vocab ``instance``, also read as one string), or, when only
  a few chunks match, by counting the word in their texts as the index's tokenizer splits them.

Two differences from the exact path, both deliberate. A word none of the caller's chunks holds is left out before
the choice of words (the exact path keeps a word found only in others' chunks, which then crowds out the caller's
common words: the result told whether hidden documents hold it). And a word in more than ``COMMON_ANYWHERE`` chunks
of the whole store (or the caller's own limit, if higher) is not read: it is taken as too common for every caller.
That tells a caller only that the word is in more than 50,000 chunks of the whole store, an anonymity set of
thousands of documents, never anything about one hidden document; below that bar every decision is made on the
caller's chunks only. If every word is that common, the keyword leg returns nothing and the dense leg answers. The
cost: for a caller who sees few chunks such a word is often rare among them, and the exact path would use it; there
the two paths' top 10 agree least (``eval.bench_keyword_scale``).
"""

from __future__ import annotations

import heapq
import math
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from rag import keyword_index
from rag.schemas import SearchFilters

COMMON_ANYWHERE = 50_000  # chunks of the whole store: a word in more is not read, too common for every caller
TEXT_TF_MAX = 256  # matches: up to this many, words are counted in the texts; more, in the index's occurrences
SQL_OCCURRENCES = "SELECT group_concat(doc) FROM chunks_instances WHERE term = ?"  # a chunk's row once per occurrence


@dataclass
class Arrays:
    """One snapshot of the chunk table: positions of documents, and per chunk row its document and length."""

    key: tuple
    doc_position: dict[str, int]
    doc_of_row: np.ndarray  # rowid -> document position; -1: no chunk (or one newer than the snapshot)
    length_of_row: np.ndarray
    doc_chunks: np.ndarray
    doc_length: np.ndarray
    rows: int
    callers: dict = field(default_factory=dict)  # (tokens, filters, access generation) -> (mask, total, mean)
    too_common: dict = field(default_factory=dict)  # word -> the cap it was found above


def _parse(joined: str | None) -> np.ndarray:
    """Integers SQLite joined with commas, as an array (numpy's text parser: 13x faster than splitting)."""
    if not joined:
        return np.zeros(0, dtype=np.int64)
    return np.fromstring(joined, dtype=np.int64, sep=",")


def load_arrays(conn, key: tuple) -> Arrays:  # noqa: ANN001 - an sqlite3 connection
    """The arrays of the chunk table as it is now: one grouped query, its lists parsed by numpy."""
    rows = conn.execute("SELECT doc_id, group_concat(rowid), group_concat(length) FROM chunks GROUP BY doc_id")
    names, rowids, lengths, counts = [], [], [], []
    for doc_id, ids, sizes in rows:
        names.append(doc_id)
        rowids.append(ids)
        lengths.append(sizes)
        counts.append(ids.count(",") + 1)
    rowid = _parse(",".join(rowids))
    length = _parse(",".join(lengths))
    position = np.repeat(np.arange(len(names), dtype=np.int32), counts)
    size = int(rowid.max()) + 1 if len(rowid) else 0
    doc_of_row = np.full(size, -1, dtype=np.int32)
    doc_of_row[rowid] = position
    length_of_row = np.zeros(size, dtype=np.int32)
    length_of_row[rowid] = length
    return Arrays(
        key=key,
        doc_position={name: i for i, name in enumerate(names)},
        doc_of_row=doc_of_row,
        length_of_row=length_of_row,
        doc_chunks=np.bincount(position, minlength=len(names)).astype(np.int64),
        doc_length=np.bincount(position, weights=length, minlength=len(names)).astype(np.int64),
        rows=len(rowid),
    )


class KeywordScale:
    """The arrays of one keyword index in this process, and the searches over them."""

    def __init__(self) -> None:
        self._arrays: Arrays | None = None
        self._lock = threading.Lock()

    def applies(self, conn, key: tuple, threshold: int) -> bool:  # noqa: ANN001
        """Whether the store is large enough for the array path: by the arrays when current, else by the highest
        chunk rowid (a bound on the chunk count that costs one index probe)."""
        current = self._arrays
        if current is not None and current.key == key:
            return current.rows >= threshold
        return (conn.execute("SELECT max(rowid) FROM chunks").fetchone()[0] or 0) >= threshold

    def arrays(self, conn, key: tuple) -> Arrays:  # noqa: ANN001
        """The arrays for ``key`` (chunk writes here, vector writes anywhere), rebuilt once when it changed."""
        current = self._arrays
        if current is not None and current.key == key:
            return current
        with self._lock:
            if self._arrays is None or self._arrays.key != key:
                self._arrays = load_arrays(conn, key)
            return self._arrays

    @staticmethod
    def caller(index, arrays: Arrays, tokens: Iterable[str], filters: SearchFilters | None) -> tuple:  # noqa: ANN001
        """(document mask, chunk count, mean length) of the caller's chunks, cached per access generation."""
        key = (tuple(sorted(set(tokens))), filters.model_dump_json() if filters else None, index.access_generation)
        found = arrays.callers.get(key)
        if found is None:
            mask = np.zeros(len(arrays.doc_chunks), dtype=bool)
            places = [arrays.doc_position.get(d, -1) for d in index.allowed_documents(key[0], filters)]
            mask[[p for p in places if p >= 0]] = True
            count, length = int(arrays.doc_chunks[mask].sum()), int(arrays.doc_length[mask].sum())
            found = (mask, max(count, 1), (length / count if count and length else 1.0))
            if len(arrays.callers) > 256:
                arrays.callers.clear()
            arrays.callers[key] = found
        return found

    @staticmethod
    def postings(conn, arrays: Arrays, word: str, cap: int) -> np.ndarray | None:  # noqa: ANN001
        """The rows holding ``word`` (at most ``cap``), or None when more than ``cap`` chunks of all hold it."""
        if arrays.too_common.get(word, 0) >= cap:
            return None
        sql = "SELECT group_concat(rowid) FROM (SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? LIMIT ?)"
        rows = _parse(conn.execute(sql, [f'"{word}"', cap + 1]).fetchone()[0])
        if len(rows) > cap:
            arrays.too_common[word] = cap
            return None
        return rows[rows < len(arrays.doc_of_row)]  # a chunk written after the snapshot is nobody's yet

    def search(self, index, conn, key: tuple, words: list[str], top_k: int, tokens, filters, share: float) -> list:  # noqa: ANN001
        """``keyword_search`` over the arrays: the same words chosen and BM25 statistics as the exact path."""
        arrays = self.arrays(conn, key)
        mask, total, mean_length = self.caller(index, arrays, tokens, filters)
        limit = max(share * total, keyword_index.COMMON_FLOOR)
        cap = max(COMMON_ANYWHERE, int(share * total))  # never below what the caller's own limit keeps
        mine: dict[str, np.ndarray] = {}
        anywhere: dict[str, int] = {}
        for word in words:
            rows = self.postings(conn, arrays, word, cap)
            if rows is not None and len(rows):
                places = arrays.doc_of_row[rows]
                mine[word] = rows[(places >= 0) & mask[np.maximum(places, 0)]]
                anywhere[word] = len(rows)
        # As the exact path: a word in at most ``limit`` chunks of all ranks by that count, the others by the
        # caller's; kept when in at most ``limit`` of the caller's, else the two rarest when none is.
        counts = {w: anywhere[w] for w in mine if anywhere[w] <= limit}
        counts.update({w: len(mine[w]) for w in mine if anywhere[w] > limit})
        ordered = sorted((w for w in counts if counts[w] and len(mine[w])), key=lambda w: counts[w])
        chosen = [w for w in ordered if counts[w] <= limit] or ordered[:2]
        if not chosen:
            return []
        idf = {w: max(math.log((total - len(mine[w]) + 0.5) / (len(mine[w]) + 0.5)), 1e-6) for w in chosen}
        mine = {w: mine[w] for w in chosen}
        if sum(len(rows) for rows in mine.values()) <= TEXT_TF_MAX:
            return self._score_texts(conn, mine, idf, mean_length, top_k)
        return self._score_occurrences(conn, arrays, mask, mine, idf, mean_length, top_k)

    @staticmethod
    def _score_occurrences(conn, arrays: Arrays, mask, mine: dict, idf: dict, mean: float, top_k: int) -> list:  # noqa: ANN001
        """BM25 of the caller's chunks holding the chosen words, tf from each word's occurrences (fts5vocab
        ``instance``, read in one string), summed per chunk in the exact path's order."""
        k1, b = keyword_index.BM25_K1, keyword_index.BM25_B
        parts, gains = [], []
        for word in mine:
            found = _parse(conn.execute(SQL_OCCURRENCES, [word]).fetchone()[0])
            found = found[found < len(arrays.doc_of_row)]
            if len(found) > 1 and bool(np.any(found[1:] < found[:-1])):
                found = np.sort(found)
            starts = np.flatnonzero(np.r_[True, found[1:] != found[:-1]]) if len(found) else found
            rows, tf = found[starts], np.diff(np.r_[starts, len(found)])
            places = arrays.doc_of_row[rows]
            keep = (places >= 0) & mask[np.maximum(places, 0)]
            rows, tf = rows[keep], tf[keep].astype(np.float64)
            norm = k1 * (1 - b + b * arrays.length_of_row[rows] / mean)
            parts.append(rows)
            gains.append(idf[word] * tf * (k1 + 1) / (tf + norm))
        rows, where = np.unique(np.concatenate(parts), return_inverse=True)
        scores = np.bincount(where, weights=np.concatenate(gains), minlength=len(rows))  # in order: as the exact sum
        if len(rows) > top_k:  # every chunk tied with the k-th best: ties go by chunk id, as in the exact path
            keep = scores >= np.partition(scores, len(scores) - top_k)[len(scores) - top_k]
            rows, scores = rows[keep], scores[keep]
        ids = _chunk_ids(conn, rows)
        return heapq.nlargest(top_k, ((ids[int(r)], float(v)) for r, v in zip(rows, scores, strict=True)), key=_order)

    @staticmethod
    def _score_texts(conn, mine: dict, idf: dict, mean_length: float, top_k: int) -> list:  # noqa: ANN001
        """BM25 of a few chunks, each word counted in their texts as the index splits them."""
        k1, b = keyword_index.BM25_K1, keyword_index.BM25_B
        listed = sorted({int(r) for rows in mine.values() for r in rows})
        sql = f"SELECT rowid, id, search, length FROM chunks WHERE rowid IN ({','.join('?' * len(listed))})"
        scores: dict[str, float] = {}
        for rowid, chunk_id, search, length in conn.execute(sql, listed).fetchall():
            counted = Counter(keyword_index.index_words(search))
            for word in mine:  # the chosen words, in the exact path's order
                at = np.searchsorted(mine[word], rowid)
                if at < len(mine[word]) and mine[word][at] == rowid:
                    tf = counted.get(word) or 1  # the index holds the word here even if this split disagrees
                    norm = k1 * (1 - b + b * length / mean_length)
                    scores[chunk_id] = scores.get(chunk_id, 0.0) + idf[word] * tf * (k1 + 1) / (tf + norm)
        return heapq.nlargest(top_k, scores.items(), key=_order)


def _order(item: tuple[str, float]) -> tuple[float, str]:
    return item[1], item[0]


def _chunk_ids(conn, rows: np.ndarray) -> dict[int, str]:  # noqa: ANN001
    """Chunk row -> chunk id."""
    listed = [int(r) for r in rows]
    found: dict[int, str] = {}
    for start in range(0, len(listed), 500):
        batch = listed[start : start + 500]
        found.update(conn.execute(f"SELECT rowid, id FROM chunks WHERE rowid IN ({','.join('?' * len(batch))})", batch))
    return found
