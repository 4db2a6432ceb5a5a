"""Plain text: one section, in whatever encoding decode_text recognises."""

from __future__ import annotations

from pathlib import Path

from ingest.document import ParsedDocument, ReaderOptions, Section, decode_text, title_from_filename
from rag.errors import (
    EmptyDocumentError,
)

SUFFIXES = frozenset({".txt", ".text"})


def read(path: Path, options: ReaderOptions | None = None) -> ParsedDocument:
    text = decode_text(path.read_bytes(), path).strip()
    if not text:
        raise EmptyDocumentError(f"{path.name}: the file is empty: remove it or add content")
    return ParsedDocument(title_from_filename(path), [Section(text)], "text")
