"""The SQLite file beside the vector store: the document registry (``rag.registry``) and the chunk texts with
their keyword index (``rag.keyword_index``), over one set of connections (``rag.sqlite_file``).

``ChromaStore.docstore`` is one of these; the names below stay importable from here for the modules that use
them (ingest, eval, the CLI).
"""

from __future__ import annotations

from rag.keyword_index import COMMON_FLOOR, KeywordIndex, fts_terms, word_count
from rag.registry import STATUSES, DocumentRecord, now_iso

__all__ = ["COMMON_FLOOR", "STATUSES", "DocStore", "DocumentRecord", "fts_terms", "now_iso", "word_count"]


class DocStore(KeywordIndex):
    """The registry and the chunk texts in one SQLite file: a document's registry row, its ACL tokens and its
    chunks change in transactions of the same file, and every keyword search filters by access in its SQL."""
