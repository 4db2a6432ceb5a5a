"""Document preview: a document's text, for those who may read it, under the same access check as retrieval."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from rag.acl import Identity
from rag.errors import NotFoundError
from rag.packing import join_overlapping
from rag.store import ChromaStore


class DocumentPreview(BaseModel):
    doc_id: str
    title: str
    source: str = Field(description="Path of the original file.")
    doc_type: str
    version: int
    ingested_at: str | None
    chunk_count: int
    text: str = Field(description="The indexed text, chunks in reading order with their overlaps removed.")


def _visible_record(store: ChromaStore, doc_id: str, identity: Identity | None):  # noqa: ANN202
    """The registry record, if ``identity`` (None: anonymous) may see the document. A document that exists but is
    not visible gets the same 404 as one that does not exist, so its existence is not revealed."""
    registry = store.docstore
    record = registry.document(doc_id)
    tokens = registry.acl([doc_id]).get(doc_id, set()) if record is not None else set()
    if record is None or record.content_hash is None or not (identity or Identity.anonymous()).may_see(tokens):
        raise NotFoundError(f"no document {doc_id} that you may see")
    return record


def original_file(store: ChromaStore, doc_id: str, identity: Identity | None) -> Path:
    """The original file of a document the caller may see, if it is still where it was ingested from."""
    record = _visible_record(store, doc_id, identity)
    path = Path(record.path)
    if not path.is_file():
        raise NotFoundError(f"the original file of document {doc_id} is no longer at {record.path}")
    return path


def preview(store: ChromaStore, doc_id: str, identity: Identity | None) -> DocumentPreview:
    """The document's indexed text, under the same access check as retrieval."""
    registry = store.docstore
    record = _visible_record(store, doc_id, identity)
    chunks = store.document_chunks(doc_id)
    order = sorted(chunks, key=lambda cid: int(chunks[cid].get("chunk_index", 0) or 0))
    texts = registry.texts(order)
    text = ""
    for cid in order:
        if cid in texts:
            text = join_overlapping(text, texts[cid]) if text else texts[cid]
    return DocumentPreview(
        doc_id=doc_id,
        title=record.title,
        source=record.path,
        doc_type=record.doc_type,
        version=record.version,
        ingested_at=record.ingested_at,
        chunk_count=record.chunk_count,
        text=text,
    )
