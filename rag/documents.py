"""Document preview: a document's text, for those who may read it, under the same access check as retrieval."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from rag.acl import Identity
from rag.errors import NotFoundError
from rag.packing import join_overlapping
from rag.registry import DocumentRecord
from rag.seams import Store


class DocumentPreview(BaseModel):
    doc_id: str
    title: str
    source: str = Field(description="Path of the original file.")
    doc_type: str
    version: int
    ingested_at: str | None
    chunk_count: int
    text: str = Field(description="The indexed text, chunks in reading order with their overlaps removed.")


def visible_record(store: Store, doc_id: str, identity: Identity | None) -> DocumentRecord:
    """The registry record, if ``identity`` (None: anonymous) may see the document. A document that exists but is
    not visible gets the same 404 as one that does not exist, so its existence is not revealed."""
    record = store.document(doc_id)
    tokens = store.document_acl(doc_id) if record is not None else set()
    if record is None or record.content_hash is None or not (identity or Identity.anonymous()).may_see(tokens):
        raise NotFoundError(f"no document {doc_id} that you may see")
    return record


def original_file(store: Store, doc_id: str, identity: Identity | None) -> Path:
    """The original file of a document the caller may see, if it is still where it was ingested from."""
    record = visible_record(store, doc_id, identity)
    path = Path(record.path)
    if not path.is_file():
        raise NotFoundError(f"the original file of document {doc_id} is no longer at {record.path}")
    return path


def preview(store: Store, doc_id: str, identity: Identity | None) -> DocumentPreview:
    """The document's indexed text, under the same access check as retrieval."""
    record = visible_record(store, doc_id, identity)
    text = ""
    for piece in store.document_texts(doc_id):
        text = join_overlapping(text, piece) if text else piece
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
