"""Word documents with python-docx (MIT): headings by style, lists, tables as Markdown, in reading order."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from ingest.containers import check_office_zip, office_error, office_parser_errors, office_title
from ingest.document import DEFAULT_OPTIONS, ParsedDocument, ReaderOptions, Section, title_from_filename
from ingest.tables import table_sections
from rag.errors import (
    DocumentError,
    EmptyDocumentError,
)

SUFFIXES = frozenset({".docx"})


_HEADING_STYLE = re.compile(r"^heading\s*(\d)$", re.IGNORECASE)


def _heading_level(paragraph) -> int | None:  # noqa: ANN001 - docx Paragraph
    """0 for Title, N for Heading N (also through a custom style based on one), None for body text."""
    try:
        style = paragraph.style
    except (KeyError, ValueError, AttributeError):
        return None
    for _ in range(5):  # a custom style may be based on a built-in heading style
        if style is None:
            return None
        name = (style.name or "").strip()
        if name.lower() == "title":
            return 0
        match = _HEADING_STYLE.match(name)
        if match:
            return int(match.group(1))
        style = style.base_style
    return None


def _is_list_item(paragraph) -> bool:  # noqa: ANN001 - docx Paragraph
    p_pr = paragraph._p.pPr
    if p_pr is not None and p_pr.numPr is not None:
        return True
    try:
        return (paragraph.style.name or "").lower().startswith("list")
    except (KeyError, ValueError, AttributeError):
        return False


def _docx_blocks(element, parent) -> Iterator[object]:  # noqa: ANN001 - lxml element, docx parent
    """Paragraphs and tables in document order, including those inside content controls (w:sdt)."""
    from docx.oxml.ns import qn
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    for child in element.iterchildren():
        if child.tag == qn("w:p"):
            yield Paragraph(child, parent)
        elif child.tag == qn("w:tbl"):
            yield Table(child, parent)
        elif child.tag == qn("w:sdt"):
            content = child.find(qn("w:sdtContent"))
            if content is not None:
                yield from _docx_blocks(content, parent)


def _docx_cell_text(cell) -> str:  # noqa: ANN001 - docx _Cell
    from docx.table import Table

    parts = []
    for block in _docx_blocks(cell._tc, cell):
        if isinstance(block, Table):
            parts += [_docx_cell_text(c) for row in block.rows for c in row.cells]
        else:
            parts.append(block.text)
    return " ".join(p for p in parts if p.strip())


def _docx_table_rows(table) -> list[list[str]]:  # noqa: ANN001 - docx Table
    rows = []
    for row in table.rows:
        cells, previous = [], None
        for cell in row.cells:
            # A horizontally merged cell is returned once per grid column: keep its text once.
            cells.append("" if previous is not None and cell._tc is previous else _docx_cell_text(cell))
            previous = cell._tc
        rows.append(cells)
    return rows


def _docx_sections(document) -> tuple[list[Section], dict[int, str]]:  # noqa: ANN001 - docx Document
    """The body's prose under its heading path and its tables, in order; and the first level 0 and 1 headings."""
    from docx.table import Table

    sections: list[Section] = []
    headings: list[tuple[int, str]] = []  # (level, text) from the outermost in
    prose: list[tuple[str, bool]] = []  # (text, is list item)
    first_heading = {0: "", 1: ""}

    def heading_path() -> list[str]:
        return [text for _, text in headings]

    def flush() -> None:
        if prose:
            text = prose[0][0]
            for (line, is_item), (_, was_item) in zip(prose[1:], prose[:-1], strict=True):
                text += ("\n" if is_item and was_item else "\n\n") + line
            sections.append(Section(text, heading_path()))
            prose.clear()

    for block in _docx_blocks(document.element.body, document._body):
        if isinstance(block, Table):
            flush()
            sections.extend(table_sections(_docx_table_rows(block), heading_path()))
            continue
        text = block.text.strip()
        if not text:
            continue
        level = _heading_level(block)
        if level is not None:
            flush()
            headings = [(lvl, t) for lvl, t in headings if lvl < level] + [(level, text)]
            if level in first_heading and not first_heading[level]:
                first_heading[level] = text
            continue
        is_item = _is_list_item(block)
        prose.append((f"- {text}" if is_item else text, is_item))
    flush()
    return sections, first_heading


def read(path: Path, options: ReaderOptions | None = None) -> ParsedDocument:
    import docx

    check_office_zip(path, options or DEFAULT_OPTIONS)
    try:
        document = docx.Document(str(path))
        core_title = office_title(document.core_properties.title)
        sections, first_heading = _docx_sections(document)
    except DocumentError:
        raise
    except office_parser_errors() as exc:
        raise office_error(path, exc) from exc
    title = core_title or first_heading[0] or first_heading[1] or title_from_filename(path)
    if not sections:
        headings_only = [t for t in (first_heading[0], first_heading[1]) if t]
        if not headings_only:
            raise EmptyDocumentError(f"{path.name}: no text found in the Word document: add content or remove it")
        sections = [Section(headings_only[0], [headings_only[0]])]
    return ParsedDocument(title, sections, "docx")
