"""Markdown through llama-index's MarkdownNodeParser: a heading path for every section, the first `# ` heading as the
title."""

from __future__ import annotations

from pathlib import Path

from ingest.document import ParsedDocument, ReaderOptions, Section, decode_text, title_from_filename
from rag.errors import (
    EmptyDocumentError,
)

SUFFIXES = frozenset({".md", ".markdown"})


def read(path: Path, options: ReaderOptions | None = None) -> ParsedDocument:
    from llama_index.core import Document
    from llama_index.core.node_parser import MarkdownNodeParser

    text = decode_text(path.read_bytes(), path)
    nodes = MarkdownNodeParser(include_metadata=True).get_nodes_from_documents([Document(text=text)])
    sections: list[Section] = []
    title = ""
    for node in nodes:
        body = node.get_content().strip()
        # header_path holds the parents ("/Handbook/Leave/"); the node's own heading is its first line.
        parents = [h for h in str(node.metadata.get("header_path", "")).split("/") if h]
        first, _, rest = body.partition("\n")
        own = first.lstrip("#").strip() if first.startswith("#") else ""
        if own and not title and first.startswith("# "):
            title = own
        heading = parents + ([own] if own else [])
        content = rest.strip() if own else body
        if content:
            sections.append(Section(content, heading))
    if not sections:
        raise EmptyDocumentError(f"{path.name}: no text found in the Markdown file: add content or remove it")
    return ParsedDocument(title or title_from_filename(path), sections, "markdown")
