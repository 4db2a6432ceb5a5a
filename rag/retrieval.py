"""Dense retrieval over the store."""

from __future__ import annotations

from rag.embedding import Embedder
from rag.errors import InvalidRequestError
from rag.schemas import RetrievedChunk
from rag.store import ChromaStore

MAX_QUERY_CHARS = 4000


class Retriever:
    """Embeds the query and returns the nearest chunks, best first, with cosine scores."""

    def __init__(self, embedder: Embedder, store: ChromaStore, top_k: int) -> None:
        self.embedder = embedder
        self.store = store
        self.top_k = top_k

    def retrieve(self, query: str, top_k: int | None = None) -> list[RetrievedChunk]:
        query = query.strip()
        if not query:
            raise InvalidRequestError("the question is empty: send some text to search for")
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidRequestError(
                f"the question is {len(query)} characters long; shorten it to at most {MAX_QUERY_CHARS}"
            )
        k = top_k or self.top_k
        if not 1 <= k <= 100:
            raise InvalidRequestError(f"top_k must be between 1 and 100, got {k}")
        return self.store.query(self.embedder.embed_query(query), k)
