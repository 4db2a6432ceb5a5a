"""Write parsed documents into the store: chunks from many files are gathered, embedded longest first in large
batches and written to Chroma; a document is committed once all its new chunks are in.

Per document: mark it ``indexing`` in the registry, write texts then vectors, drop chunks the new version no
longer has, then mark it ``indexed`` with the new hash. A crash at any point leaves extra chunks, never missing
ones, and the next run finishes the job.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest.chunking import Chunker
from ingest.report import FileResult
from ingest.triage import Candidate
from ingest.workers import ParseOutcome
from rag.embedding import Embedder
from rag.errors import DocumentError
from rag.schemas import ChunkRecord
from rag.settings import ChunkingSettings
from rag.store import ChromaStore


@dataclass
class PendingDocument:
    """A document whose new chunks are waiting in the embedding buffer."""

    candidate: Candidate
    title: str
    doc_type: str
    records: list[ChunkRecord]
    kept: list[ChunkRecord]
    stale: list[str]
    result: FileResult
    remaining: int


EmbedBuffer = list[tuple[ChunkRecord, PendingDocument]]


class DocumentWriter:
    """Chunks (when the parse workers could not), embeds and stores parsed documents, and records their outcome."""

    def __init__(self, embedder: Embedder, store: ChromaStore, chunking: ChunkingSettings) -> None:
        self.embedder = embedder
        self.store = store
        self.chunking = chunking
        self._chunker: Chunker | None = None

    @property
    def registry(self):  # noqa: ANN201 - DocStore
        return self.store.docstore

    @property
    def chunker(self) -> Chunker:
        if self._chunker is None:
            self._chunker = Chunker(self.embedder.tokenize, self.chunking.chunk_tokens, self.chunking.overlap_tokens)
        return self._chunker

    def fail(self, candidate: Candidate, error: DocumentError) -> FileResult:
        self.registry.record_failure(candidate.doc_id, str(candidate.path), error.message)
        return FileResult(candidate.path, "failed", error=error.message, code=error.code, doc_id=candidate.doc_id)

    def prepare(self, candidate: Candidate, outcome: ParseOutcome) -> PendingDocument | FileResult:
        """Mark the document ``indexing`` and sort its chunks into new, kept and stale; a failure if it has none."""
        records, counts = outcome.records, outcome.token_counts
        if records is None:  # chunk here: the embedder's tokenizer could not travel to the workers
            try:
                records = self.chunker.chunk(outcome.document, **candidate.chunk_args())
            except (ValueError, RuntimeError) as exc:
                return self.fail(candidate, DocumentError(f"{candidate.path.name}: cannot split the text: {exc}"))
            counts = [len(self.embedder.tokenize(r.embed_text)) for r in records]
        if not records:
            return self.fail(candidate, DocumentError(f"{candidate.path.name}: no text to index"))
        self.registry.begin(candidate.doc_id, str(candidate.path), candidate.acl)
        if candidate.known is not None:  # a former version, or a crash, may have left chunks behind
            in_chroma = set(self.store.document_chunks(candidate.doc_id))
            everywhere = in_chroma | self.registry.chunk_ids(candidate.doc_id)
        else:
            in_chroma, everywhere = set(), set()
        wanted = {r.id for r in records}
        new = [r for r in records if r.id not in in_chroma]
        kept = [r for r in records if r.id in in_chroma]
        status = "updated" if candidate.known is not None and candidate.known.content_hash else "added"
        result = FileResult(candidate.path, status, chunks=len(records), embedded=len(new), doc_id=candidate.doc_id)
        result.tokens = sum(n for r, n in zip(records, counts, strict=True) if r.id not in in_chroma)
        return PendingDocument(
            candidate,
            outcome.document.title,
            outcome.document.doc_type,
            records=new,
            kept=kept,
            stale=sorted(everywhere - wanted),
            result=result,
            remaining=len(new),
        )

    def flush(self, buffer: EmbedBuffer) -> list[FileResult]:
        """Embed the gathered chunks longest first (little padding), write them, finish completed documents."""
        if not buffer:
            return []
        ordered = sorted(buffer, key=lambda item: len(item[0].embed_text), reverse=True)
        vectors = self.embedder.embed_documents([record.embed_text for record, _ in ordered])
        self.store.upsert([record for record, _ in ordered], vectors)
        finished: list[FileResult] = []
        for _, pending in ordered:
            pending.remaining -= 1
            if pending.remaining == 0:
                finished.append(self.finalize(pending))
        return finished

    def finalize(self, pending: PendingDocument) -> FileResult:
        """Keep the unchanged chunks' texts, drop the stale chunks, and mark the document ``indexed``."""
        candidate = pending.candidate
        if pending.kept:
            self.store.docstore.put_chunks([(r.id, candidate.doc_id, r.text, r.embed_text) for r in pending.kept])
            self.store.update_metadata(pending.kept)
        self.store.delete(pending.stale)  # after the new chunks are in: a crash leaves extra chunks, never missing
        self.registry.commit(
            candidate.doc_id,
            path=str(candidate.path),
            title=pending.title,
            doc_type=pending.doc_type,
            content_hash=candidate.file_hash,
            size_bytes=candidate.size,
            chunk_count=len(pending.records) + len(pending.kept),
            acl=candidate.acl,
            tags=candidate.tags,
        )
        pending.records = []  # release the texts
        return pending.result
