"""What retrieval asks of a store and of a reranker, and what a store asks of its dense search index, and nothing
more: the retriever, the document preview and the container use these, never a store's or a reranker's insides.
``ChromaStore`` (rag.store), ``CrossEncoderReranker`` (rag.rerank) and ``ExactIndex`` (rag.vector_index) implement
them; tests/contracts runs each implementation through one suite.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pathlib import Path

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


class SearchIndex(Protocol):
    """The dense leg's nearest-neighbour search over chunk vectors, each tagged with its document. Chroma stays the
    durable store; an index is rebuilt from it, or loaded from its own saved copy. The access filter is applied
    inside the search, before the top-k: a very selective ``allowed_docs`` still finds the permitted chunk, and no
    chunk of another document ever comes back. Exact or approximate; the store sees only this."""

    def __len__(self) -> int:
        """Chunks held."""
        ...

    def add(self, ids: Sequence[str], doc_ids: Sequence[str], vectors: Sequence[Sequence[float]]) -> None:
        """Add chunks, or replace the vector and document of ids already held. ValueError on a wrong dimension."""
        ...

    def remove(self, ids: Sequence[str]) -> None:
        """Drop these chunks (unknown ids ignored); none of them is returned by a search after this."""
        ...

    def search(
        self, query: Sequence[float], top_k: int, allowed_docs: Sequence[str] | None = None
    ) -> list[tuple[str, float]]:
        """(chunk id, cosine) of the ``top_k`` nearest chunks of ``allowed_docs`` (None: all; empty: none), best
        first."""
        ...

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The held vectors of these chunks at unit length (unknown ids left out)."""
        ...

    def save(self, path: Path, version: int = 0) -> None:
        """Write the index under the directory ``path``, atomically: a crash leaves the previous copy or the new
        one. ``version`` is the store's ``vectors_version`` the index reflects."""
        ...

    def load(self, path: Path, version: int | None = None) -> int:
        """Replace the contents with the copy saved under ``path``; the version it was saved at. IndexFileError
        (and the contents unchanged) when it is missing, damaged, of another kind or format, or saved at another
        ``version`` than the one given."""
        ...
