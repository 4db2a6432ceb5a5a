"""Hybrid retrieval under access control: dense vectors and BM25 keywords, fused by reciprocal rank.

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
from rag.rerank import CrossEncoderReranker
from rag.schemas import RetrievedChunk, SearchFilters
from rag.settings import RetrievalSettings
from rag.store import ChromaStore

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 4000
_KEYWORD_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="keyword-search")


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


class Retriever:
    CACHE_SIZE = 256

    def __init__(
        self,
        embedder: Embedder,
        store: ChromaStore,
        settings: RetrievalSettings,
        reranker: CrossEncoderReranker | None = None,
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.settings = settings
        self.reranker = reranker
        self._allowed: OrderedDict[tuple, list[str]] = OrderedDict()
        self._allowed_lock = threading.Lock()

    def allowed_documents(self, tokens: frozenset[str], filters: SearchFilters | None) -> list[str]:
        """The caller's documents, from the registry; cached per (tokens, filters) until the next write that
        can change access (the registry's access generation), so a revoked grant is never served from cache."""
        registry = self.store.docstore
        key = (tokens, filters.model_dump_json() if filters else None, registry.access_generation)
        with self._allowed_lock:
            if key in self._allowed:
                self._allowed.move_to_end(key)
                return self._allowed[key]
        allowed = registry.allowed_documents(tokens, filters)
        with self._allowed_lock:
            self._allowed[key] = allowed
            while len(self._allowed) > self.CACHE_SIZE:
                self._allowed.popitem(last=False)
        return allowed

    @property
    def top_k(self) -> int:
        return self.settings.top_k

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
        allowed = self.allowed_documents(tokens, filters)
        if not allowed:
            return []
        n = max(k, self.settings.candidates)
        # The keyword leg runs on a second core meanwhile: SQLite and numpy both release the GIL.
        keyword = (
            _KEYWORD_POOL.submit(
                self.store.docstore.keyword_search, query, n, tokens, filters, self.settings.keyword_common_share
            )
            if mode != "dense"
            else None
        )
        legs: dict[str, list[str]] = {}
        cosine: dict[str, float] = {}
        try:
            vector = self.embedder.embed_query(query)
            if mode != "keyword":
                dense = self.store.index.search(vector, n, allowed)
                legs["dense"] = [cid for cid, _ in dense]
                cosine.update(dense)
        finally:
            keyword_hits = keyword.result() if keyword is not None else None  # errors raise here, never ignored
        if keyword_hits is not None:
            legs["keyword"] = [cid for cid, _ in keyword_hits]
        weights = {"dense": self.settings.dense_weight, "keyword": self.settings.keyword_weight}
        depth = max(k, self.settings.rerank_candidates) if self.reranker is not None else k
        fused = reciprocal_rank_fusion(legs, weights, self.settings.rrf_k)[:depth]
        missing = [cid for cid, _, _ in fused if cid not in cosine]
        if missing:  # found by keywords only: score them against the query too, for the relevance threshold
            q = np.asarray(vector, dtype=np.float32)
            q /= np.linalg.norm(q) or 1.0
            cosine.update({cid: float(v @ q) for cid, v in self.store.index.vectors(missing).items()})
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
