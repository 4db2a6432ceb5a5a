"""Token-aware chunking: llama-index's SentenceSplitter, counting in the embedder's own tokens.

Markdown tables are split only between rows, and every piece repeats the table's header row, so a chunk of a
table reads as a table on its own.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ingest.document import ParsedDocument
from rag.schemas import ChunkRecord


def document_id(path: Path) -> str:
    """Stable id for a file: a hash of its absolute path."""
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ChunkSpec:
    """What a parse worker needs to chunk exactly as the main process would: the embedder's tokenizer file."""

    tokenizer_file: str
    chunk_tokens: int
    overlap_tokens: int

    def build(self) -> Chunker:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(self.tokenizer_file)
        tokenizer.no_truncation()  # tokenizer.json may carry its own limits; counting needs whole texts
        tokenizer.no_padding()

        def tokenize(text: str) -> list[int]:
            return tokenizer.encode(text, add_special_tokens=False).ids

        return Chunker(tokenize, self.chunk_tokens, self.overlap_tokens)


_SEPARATOR = re.compile(r"^\|(\s*:?-{3,}:?\s*\|)+$")

# The splitter tokenises a whole block before it splits it: a 120 MB text file asked the tokenizer for 2 GB at
# once and killed its worker. Longer sections are cut first, so no tokenizer call sees more than this.
MAX_PIECE_CHARS = 100_000


def bounded_pieces(text: str, limit: int = MAX_PIECE_CHARS) -> Iterator[str]:
    """``text`` in pieces of at most ``limit`` characters, cut at a paragraph break, else a line break, else a
    space (never inside a Markdown table, whose rows are consecutive lines). Text within the limit is yielded
    whole, so ordinary documents chunk exactly as before."""
    start, end = 0, len(text)
    while end - start > limit:
        stop = start + limit
        cut = -1
        for mark in ("\n\n", "\n", " "):
            cut = text.rfind(mark, start + limit // 2, stop)
            if cut >= 0:
                break
        cut = cut if cut > start else stop
        yield text[start:cut]
        start = cut
    yield text[start:end]


def split_blocks(text: str) -> Iterator[tuple[str, str]]:
    """("text" | "table", block) pieces of a section, in order; a table is a run of lines starting with '|'."""
    kind, lines = "text", []
    for line in text.splitlines():
        line_kind = "table" if line.lstrip().startswith("|") else "text"
        if line_kind != kind and lines:
            block = "\n".join(lines).strip()
            if block:
                yield kind, block
            lines = []
        kind = line_kind
        lines.append(line.strip() if line_kind == "table" else line)
    block = "\n".join(lines).strip()
    if block:
        yield kind, block


class Chunker:
    """Splits each section within a token budget; chunk ids are document id + hash of the chunk's content."""

    def __init__(self, tokenize: Callable[[str], list[int]], chunk_tokens: int, overlap_tokens: int) -> None:
        from llama_index.core.node_parser import SentenceSplitter

        if overlap_tokens >= chunk_tokens:
            raise ValueError(f"overlap ({overlap_tokens}) must be smaller than the chunk size ({chunk_tokens})")
        self._splitter = SentenceSplitter(
            chunk_size=chunk_tokens, chunk_overlap=overlap_tokens, tokenizer=tokenize, paragraph_separator="\n\n"
        )
        self._tokenize = tokenize
        self.chunk_tokens = chunk_tokens

    def split_table(self, table: str) -> list[str]:
        """Row groups within the token budget, each under the header; a row is never cut."""
        lines = table.splitlines()
        header = lines[:2] if len(lines) > 1 and _SEPARATOR.match(lines[1].replace(" ", "")) else []
        rows = lines[len(header) :]
        if not rows:
            return [table]
        budget = self.chunk_tokens - len(self._tokenize("\n".join(header)))
        pieces: list[str] = []
        group: list[str] = []
        used = 0
        for row in rows:
            cost = len(self._tokenize(row)) + 1
            if group and used + cost > budget:
                pieces.append("\n".join(header + group))
                group, used = [], 0
            group.append(row)
            used += cost
        pieces.append("\n".join(header + group))
        return pieces

    def count_tokens(self, text: str) -> int:
        return len(self._tokenize(text))

    def split_section(self, text: str) -> list[str]:
        pieces: list[str] = []
        for part in bounded_pieces(text):
            for kind, block in split_blocks(part):
                pieces.extend(self.split_table(block) if kind == "table" else self._splitter.split_text(block))
        return pieces

    def embed_prefix(self, title: str, heading: list[str]) -> str:
        trail = " > ".join(h for h in heading if h and h != title)
        return f"{title}\n{trail}\n\n" if trail else f"{title}\n\n"

    def chunk(
        self,
        doc: ParsedDocument,
        *,
        doc_id: str,
        source: str,
        file_hash: str,
        extra_metadata: dict[str, str | int | float | bool] | None = None,
    ) -> list[ChunkRecord]:
        records: list[ChunkRecord] = []
        seen: dict[str, int] = {}
        for section in doc.sections:
            heading = " > ".join(section.heading)
            for text in self.split_section(section.text):
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
                            **(extra_metadata or {}),
                        },
                    )
                )
        return records
