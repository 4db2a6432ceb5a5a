"""Hybrid retrieval under access control: dense vectors and BM25 keywords, fused by score distribution or by
reciprocal rank (``retrieval.fusion``).

Every query runs for an identity (no identity: public documents only). The documents that identity may see,
narrowed by any metadata filters, are resolved once from the registry; both legs search only among them, inside
the search (the dense leg masks its exact scores, the keyword leg filters in its SQL), so a very selective
filter still returns the permitted relevant chunk. Anything that goes wrong while resolving the identity or the
filters raises: an error response, never unfiltered results.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from rag.acl import Identity
from rag.embedding import Embedder
from rag.errors import InvalidRequestError
from rag.schemas import RetrievedChunk, SearchFilters
from rag.seams import Reranker, Store
from rag.settings import RetrievalSettings

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 4000
_SEARCH_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="search")


def reciprocal_rank_fusion(
    legs: dict[str, Sequence[str]], weights: dict[str, float], k: int
) -> list[tuple[str, float, dict[str, int]]]:
    """(id, fused score, {leg: 1-based rank}) best first; score = sum over legs of weight / (k + rank).
    Ties keep the order in which ids were first seen, legs in the given order."""
    scores: dict[str, float] = {}
    ranks: dict[str, dict[str, int]] = {}
    for leg, ids in legs.items():
        for rank, chunk_id in enumerate(ids, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + weights.get(leg, 1.0) / (k + rank)
            ranks.setdefault(chunk_id, {})[leg] = rank
    order = sorted(scores, key=lambda cid: -scores[cid])
    return [(cid, scores[cid], ranks[cid]) for cid in order]


def distribution_based_score_fusion(
    legs: dict[str, Sequence[tuple[str, float]]], weights: dict[str, float]
) -> list[tuple[str, float, dict[str, int]]]:
    """(id, fused score, {leg: 1-based rank}) best first. Each leg's scores are rescaled by their own spread,
    ``(score - (mean - 3 sd)) / (6 sd)`` clipped to [0, 1] (Qdrant's DBSF), and summed with the leg weights; an id
    missing from a leg gets nothing from it. Unlike rank fusion this keeps how far ahead a leg's best match is: a
    decisive dense match is not overtaken by a chunk that both legs rank second. A leg whose scores are all equal
    puts them at 0.5. Ties keep the order in which ids were first seen, legs in the given order."""
    scores: dict[str, float] = {}
    ranks: dict[str, dict[str, int]] = {}
    for leg, hits in legs.items():
        if not hits:
            continue
        values = np.fromiter((score for _, score in hits), dtype=np.float64, count=len(hits))
        mean, spread = float(values.mean()), 6.0 * float(values.std())
        normalised = np.clip((values - mean) / spread + 0.5, 0.0, 1.0) if spread > 0 else np.full(len(hits), 0.5)
        weight = weights.get(leg, 1.0)
        for rank, ((chunk_id, _), value) in enumerate(zip(hits, normalised, strict=True), start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + weight * float(value)
            ranks.setdefault(chunk_id, {})[leg] = rank
    order = sorted(scores, key=lambda cid: -scores[cid])
    return [(cid, scores[cid], ranks[cid]) for cid in order]


class Retriever:
    CACHE_SIZE = 256

    def __init__(
        self,
        embedder: Embedder,
        store: Store,
        settings: RetrievalSettings,
        reranker: Reranker | None = None,
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.settings = settings
        self.reranker = reranker
        self._allowed: OrderedDict[tuple, list[str]] = OrderedDict()
        self._allowed_lock = threading.Lock()

    def allowed_documents(self, tokens: frozenset[str], filters: SearchFilters | None) -> list[str]:
        """The caller's documents, from the store; cached per (tokens, filters) until the next write that
        can change access (the store's access generation), so a revoked grant is never served from cache."""
        key = (tokens, filters.model_dump_json() if filters else None, self.store.access_generation)
        with self._allowed_lock:
            if key in self._allowed:
                self._allowed.move_to_end(key)
                return self._allowed[key]
        allowed = self.store.allowed_documents(tokens, filters)
        with self._allowed_lock:
            self._allowed[key] = allowed
            while len(self._allowed) > self.CACHE_SIZE:
                self._allowed.popitem(last=False)
        return allowed

    def fuse(self, legs: dict[str, list[tuple[str, float]]]) -> list[tuple[str, float, dict[str, int]]]:
        """One ranking from the legs' (id, score) lists, by ``retrieval.fusion``; one leg keeps its own order."""
        weights = {"dense": self.settings.dense_weight, "keyword": self.settings.keyword_weight}
        if self.settings.fusion == "rrf":
            return reciprocal_rank_fusion(
                {leg: [cid for cid, _ in hits] for leg, hits in legs.items()}, weights, self.settings.rrf_k
            )
        return distribution_based_score_fusion(legs, weights)

    def clear_cache(self) -> None:
        with self._allowed_lock:
            self._allowed.clear()

    @property
    def top_k(self) -> int:
        return self.settings.top_k

    def texts_mentioning(
        self, phrase: str, *, identity: Identity | None = None, filters: SearchFilters | None = None
    ) -> list[str]:
        """Chunk texts, among the documents this identity may see, whose words hold ``phrase``'s words."""
        return self.store.texts_mentioning(phrase, (identity or Identity.anonymous()).tokens(), filters)

    def retrieve(
        self,
        query: str,
        top_k: int | None = None,
        *,
        identity: Identity | None = None,
        filters: SearchFilters | None = None,
        mode: str | None = None,
    ) -> list[RetrievedChunk]:
        query = query.strip()
        if not query:
            raise InvalidRequestError("the question is empty: send some text to search for")
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidRequestError(
                f"the question is {len(query)} characters long; shorten it to at most {MAX_QUERY_CHARS}"
            )
        k = top_k or self.settings.top_k
        if not 1 <= k <= 100:
            raise InvalidRequestError(f"top_k must be between 1 and 100, got {k}")
        mode = mode or self.settings.mode
        if mode not in ("hybrid", "dense", "keyword"):
            raise InvalidRequestError(f"unknown retrieval mode {mode!r}: use hybrid, dense or keyword")
        tokens = (identity or Identity.anonymous()).tokens()
        n = max(k, self.settings.candidates)
        # The caller's documents and the keyword leg (access checked in its SQL) are looked up on other cores
        # while the query is embedded: SQLite, onnxruntime and numpy all release the GIL.
        permitted_docs = _SEARCH_POOL.submit(self.allowed_documents, tokens, filters)
        keyword = (
            _SEARCH_POOL.submit(
                self.store.keyword_search, query, n, tokens, filters, self.settings.keyword_common_share
            )
            if mode != "dense"
            else None
        )
        legs: dict[str, list[tuple[str, float]]] = {}
        cosine: dict[str, float] = {}
        try:
            vector = self.embedder.embed_query(query)
            allowed = permitted_docs.result()
            if allowed and mode != "keyword":
                legs["dense"] = self.store.dense_search(vector, n, allowed)
                cosine.update(legs["dense"])
        finally:
            allowed = permitted_docs.result()  # errors raise, never ignored: no results without the filter
            keyword_hits = keyword.result() if keyword is not None else None
        if not allowed:
            return []
        if keyword_hits is not None:
            legs["keyword"] = keyword_hits
        depth = max(k, self.settings.rerank_candidates) if self.reranker is not None else k
        fused = self.fuse(legs)[:depth]
        missing = [cid for cid, _, _ in fused if cid not in cosine]
        if missing:  # found by keywords only: score them against the query too, for the relevance threshold
            q = np.asarray(vector, dtype=np.float32)
            q /= np.linalg.norm(q) or 1.0
            cosine.update({cid: float(v @ q) for cid, v in self.store.vectors(missing).items()})
        chunks = self.store.chunks([(cid, cosine.get(cid, 0.0)) for cid, _, _ in fused])
        permitted = set(allowed)
        extra = {cid: (score, ranks) for cid, score, ranks in fused}
        result = []
        for chunk in chunks:
            if str(chunk.metadata.get("doc_id")) not in permitted:  # cannot happen; if it ever did: fail closed
                log.error("retrieval returned chunk %s outside the caller's documents; dropped", chunk.id)
                continue
            chunk.fused, chunk.ranks = round(extra[chunk.id][0], 6), extra[chunk.id][1]
            result.append(chunk)
        if self.reranker is not None:
            result = self.reranker.rerank(query, result)  # only permitted chunks ever reach it
        return result[:k]
