"""Token-aware chunking: llama-index's SentenceSplitter, counting in the embedder's own tokens."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from ingest.readers import ParsedDocument
from rag.schemas import ChunkRecord


def document_id(path: Path) -> str:
    """Stable id for a file: a hash of its absolute path."""
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Chunker:
    """Splits each section within a token budget; chunk ids are document id + hash of the chunk's content."""

    def __init__(self, tokenize: Callable[[str], list[int]], chunk_tokens: int, overlap_tokens: int) -> None:
        from llama_index.core.node_parser import SentenceSplitter

        if overlap_tokens >= chunk_tokens:
            raise ValueError(f"overlap ({overlap_tokens}) must be smaller than the chunk size ({chunk_tokens})")
        self._splitter = SentenceSplitter(
            chunk_size=chunk_tokens, chunk_overlap=overlap_tokens, tokenizer=tokenize, paragraph_separator="\n\n"
        )

    def embed_prefix(self, title: str, heading: list[str]) -> str:
        trail = " > ".join(h for h in heading if h and h != title)
        return f"{title}\n{trail}\n\n" if trail else f"{title}\n\n"

    def chunk(self, doc: ParsedDocument, *, doc_id: str, source: str, file_hash: str) -> list[ChunkRecord]:
        records: list[ChunkRecord] = []
        seen: dict[str, int] = {}
        for section in doc.sections:
            heading = " > ".join(section.heading)
            for text in self._splitter.split_text(section.text):
                text = text.strip()
                if not text:
                    continue
                digest = hashlib.sha256(f"{heading}\x00{section.page}\x00{text}".encode()).hexdigest()[:16]
                # Identical text twice in one document still gets two ids, stable across runs.
                seen[digest] = seen.get(digest, -1) + 1
                chunk_id = f"{doc_id}-{digest}" + (f"-{seen[digest]}" if seen[digest] else "")
                records.append(
                    ChunkRecord(
                        id=chunk_id,
                        text=text,
                        embed_text=self.embed_prefix(doc.title, section.heading) + text,
                        metadata={
                            "doc_id": doc_id,
                            "source": source,
                            "title": doc.title,
                            "heading": heading,
                            "page": section.page or 0,
                            "doc_type": doc.doc_type,
                            "file_hash": file_hash,
                            "chunk_index": len(records),
                        },
                    )
                )
        return records
