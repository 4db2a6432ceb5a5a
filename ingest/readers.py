"""Readers turn one file into a title and a list of sections (text + heading path + page).

Markdown goes through llama-index's MarkdownNodeParser, HTML through BeautifulSoup, PDF through pypdf.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from rag.errors import DocumentError, EmptyDocumentError, EncryptedDocumentError, UnsupportedFormatError

MARKDOWN = {".md", ".markdown"}
TEXT = {".txt", ".text"}
HTML = {".html", ".htm"}
PDF = {".pdf"}
SUPPORTED = MARKDOWN | TEXT | HTML | PDF


@dataclass
class Section:
    text: str
    heading: list[str] = field(default_factory=list)
    page: int | None = None


@dataclass
class ParsedDocument:
    title: str
    sections: list[Section]
    doc_type: str


def title_from_filename(path: Path) -> str:
    return re.sub(r"[-_]+", " ", path.stem).strip().title()


def decode_text(data: bytes, path: Path) -> str:
    """UTF-8 first, then the detected encoding; refuse what is not text rather than guess."""
    if not data.strip():
        raise EmptyDocumentError(f"{path.name}: the file is empty: remove it or add content")
    if b"\x00" in data[:4096] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UnsupportedFormatError(f"{path.name}: binary content in a text file: check the file type")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes

        best = from_bytes(data).best()
        if best is None:
            raise DocumentError(f"{path.name}: unknown text encoding: re-save the file as UTF-8") from None
        return str(best)


def read_markdown(path: Path) -> ParsedDocument:
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
        raise EmptyDocumentError(f"{path.name}: no text found in the Markdown file")
    return ParsedDocument(title or title_from_filename(path), sections, "markdown")


def read_text(path: Path) -> ParsedDocument:
    text = decode_text(path.read_bytes(), path).strip()
    return ParsedDocument(title_from_filename(path), [Section(text)], "text")


_HTML_DROP = ["script", "style", "noscript", "template", "nav", "footer", "header", "aside", "form", "svg"]
_HEADINGS = ["h1", "h2", "h3", "h4", "h5", "h6"]
_BLOCKS = ["p", "li", "pre", "blockquote", "dt", "dd", "table", "figcaption"]


def _table_markdown(table) -> str:  # noqa: ANN001 - bs4 Tag
    rows = []
    for tr in table.find_all("tr"):
        cells = [c.get_text(" ", strip=True).replace("|", "\\|") for c in tr.find_all(["th", "td"])]
        if cells:
            rows.append(cells)
    if not rows:
        return ""
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * width]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def read_html(path: Path) -> ParsedDocument:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(decode_text(path.read_bytes(), path), "html.parser")
    for tag in soup.find_all(_HTML_DROP):
        tag.decompose()
    title = (soup.title.get_text(strip=True) if soup.title else "") or ""
    body = soup.body or soup
    sections: list[Section] = []
    heading: list[str] = []
    current: list[str] = []

    def flush() -> None:
        if current:
            sections.append(Section("\n".join(current), list(heading)))
            current.clear()

    for element in body.find_all(_HEADINGS + _BLOCKS):
        if element.name not in _HEADINGS and element.find_parent(_BLOCKS) is not None:
            continue  # nested block: its container's text already holds it
        if element.name in _HEADINGS:
            flush()
            level = int(element.name[1])
            heading = heading[: level - 1] + [element.get_text(" ", strip=True)]
            if level == 1 and not title:
                title = heading[0]
        elif element.name == "table":
            current.append(_table_markdown(element))
        else:
            text = element.get_text(" ", strip=True)
            if text:
                current.append(("- " if element.name == "li" else "") + text)
    flush()
    if not sections:
        text = body.get_text("\n", strip=True)
        if not text:
            raise EmptyDocumentError(f"{path.name}: no text found in the HTML page")
        sections = [Section(text)]
    return ParsedDocument(title or title_from_filename(path), sections, "html")


def read_pdf(path: Path) -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            raise EncryptedDocumentError(f"{path.name}: encrypted PDF: supply a decrypted copy")
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, DocumentError):
            raise
        raise DocumentError(f"{path.name}: not a readable PDF ({exc}): re-export or repair it") from exc
    sections = [Section(text.strip(), [], number) for number, text in enumerate(pages, start=1) if text.strip()]
    if not sections:
        raise EmptyDocumentError(
            f"{path.name}: the PDF has no text layer (scanned?): OCR is not available yet; export it with text"
        )
    return ParsedDocument(str(meta_title).strip() or title_from_filename(path), sections, "pdf")


def read_document(path: Path) -> ParsedDocument:
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise EmptyDocumentError(f"{path.name}: the file is empty (0 bytes): remove it or add content")
    if suffix in MARKDOWN:
        return read_markdown(path)
    if suffix in TEXT:
        return read_text(path)
    if suffix in HTML:
        return read_html(path)
    if suffix in PDF:
        return read_pdf(path)
    supported = ", ".join(sorted(SUPPORTED))
    raise UnsupportedFormatError(f"{path.name}: unsupported file type {suffix or '(none)'}: supported are {supported}")
