"""What retrieval asks of a store and of a reranker, and nothing more: the retriever, the document preview and the
container use these, never a store's or a reranker's insides. ``ChromaStore`` (rag.store) and
``CrossEncoderReranker`` (rag.rerank) implement them; tests/contracts runs each implementation through one suite.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

    from rag.registry import DocumentRecord
    from rag.schemas import RetrievedChunk, SearchFilters


class Store(Protocol):
    """Chunks under access control. Every search takes the caller's documents (``allowed_documents``) or ACL
    tokens and filters inside the search, before its top-k, so a very selective filter still finds the permitted
    chunk and nothing else ever comes back."""

    @property
    def access_generation(self) -> Hashable:
        """Changes whenever who may see what could have changed; caches of access decisions key on it."""
        ...

    def allowed_documents(self, tokens: Iterable[str], filters: SearchFilters | None = None) -> list[str]:
        """Ids of the documents a caller with these ACL tokens may see, narrowed by ``filters``."""
        ...

    def dense_search(
        self, vector: Sequence[float], top_k: int, allowed_docs: Sequence[str] | None = None
    ) -> list[tuple[str, float]]:
        """(chunk id, cosine) of the nearest chunks among ``allowed_docs`` (None: all), best first."""
        ...

    def keyword_search(
        self,
        query: str,
        top_k: int,
        tokens: Iterable[str],
        filters: SearchFilters | None = None,
        common_share: float = 0.02,
    ) -> list[tuple[str, float]]:
        """(chunk id, BM25 score) among the caller's chunks, best first; statistics from those chunks only."""
        ...

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors of these chunks (unknown ids left out)."""
        ...

    def chunks(self, scored: Sequence[tuple[str, float]]) -> list[RetrievedChunk]:
        """Chunks with metadata and text for (id, score) pairs, in the given order (unknown ids left out)."""
        ...

    def texts_mentioning(
        self, phrase: str, tokens: Iterable[str], filters: SearchFilters | None = None, limit: int = 50
    ) -> list[str]:
        """Texts of the caller's chunks whose words hold ``phrase``'s words in order."""
        ...

    def document(self, doc_id: str) -> DocumentRecord | None:
        """The registry record of one document, whoever may see it: callers check ``document_acl``."""
        ...

    def document_acl(self, doc_id: str) -> set[str]:
        """The ACL tokens of one document (none for an unknown one)."""
        ...

    def document_texts(self, doc_id: str) -> list[str]:
        """The texts of one document's chunks, in reading order."""
        ...


class Reranker(Protocol):
    """Scores the fused candidates, all already permitted for the caller, against the query."""

    def load(self) -> None:
        """Load the model now (the container does, at start); ``rerank`` loads it otherwise."""
        ...

    def rerank(self, query: str, chunks: Sequence[RetrievedChunk]) -> list[RetrievedChunk]:
        """The chunks worth keeping, best first, each with its ``rerank`` score."""
        ...
