"""Office documents and spreadsheets: DOCX (python-docx, MIT), PPTX (python-pptx, MIT), XLSX (openpyxl, MIT), CSV
(stdlib csv).

Zip containers are checked by ingest.containers before any parser opens them; every parser error becomes a
DocumentError that says to re-save the file. Tables become Markdown tables in sections of their own.
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib
import io
import re
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from xml.etree.ElementTree import ParseError

from ingest.containers import OFFICE_KINDS, check_office_zip
from ingest.document import DEFAULT_OPTIONS, ParsedDocument, ReaderOptions, Section, decode_text, title_from_filename
from ingest.tables import streamed_table_sections, table_sections
from rag.errors import DocumentError, EmptyDocumentError


def _parser_errors() -> tuple[type[BaseException], ...]:
    """What the Office parsers raise on a damaged file (they have no common base class)."""
    errors: list[type[BaseException]] = [
        KeyError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        AssertionError,
        NotImplementedError,
        RecursionError,
        EOFError,
        OSError,
        zipfile.BadZipFile,
        zlib.error,
        ParseError,
    ]
    try:
        from lxml.etree import LxmlError

        errors.append(LxmlError)
    except ImportError:  # pragma: no cover - lxml comes with python-docx/python-pptx
        pass
    for module, name in (
        ("docx.opc.exceptions", "OpcError"),
        ("pptx.exc", "PythonPptxError"),
        ("openpyxl.utils.exceptions", "InvalidFileException"),
    ):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):  # pragma: no cover
            pass
    return tuple(errors)


def _office_error(path: Path, exc: BaseException) -> DocumentError:
    app = OFFICE_KINDS[path.suffix.lower()][0]
    detail = f"{type(exc).__name__}: {exc}"[:300]
    return DocumentError(
        f"{path.name}: the {app} file could not be read, it may be corrupt ({detail}): open it in {app} or "
        "LibreOffice and save it again"
    )


def _core_title(value: object, junk: tuple[str, ...] = ()) -> str:
    title = str(value or "").strip()
    return "" if title.lower() in junk else title


# --------------------------------------------------------------------------------------------------------------------
# DOCX
# --------------------------------------------------------------------------------------------------------------------

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


def read_docx(path: Path, options: ReaderOptions | None = None) -> ParsedDocument:
    import docx
    from docx.table import Table

    check_office_zip(path, options or DEFAULT_OPTIONS)
    try:
        document = docx.Document(str(path))
        core_title = _core_title(document.core_properties.title)
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
    except DocumentError:
        raise
    except _parser_errors() as exc:
        raise _office_error(path, exc) from exc
    title = core_title or first_heading[0] or first_heading[1] or title_from_filename(path)
    if not sections:
        headings_only = [t for t in (first_heading[0], first_heading[1]) if t]
        if not headings_only:
            raise EmptyDocumentError(f"{path.name}: no text found in the Word document: add content or remove it")
        sections = [Section(headings_only[0], [headings_only[0]])]
    return ParsedDocument(title, sections, "docx")


# --------------------------------------------------------------------------------------------------------------------
# PPTX
# --------------------------------------------------------------------------------------------------------------------


def _shapes_in_reading_order(shapes) -> list:  # noqa: ANN001 - pptx shape collection
    """Shapes (group members flattened) sorted top-to-bottom, then left-to-right."""
    from pptx.shapes.group import GroupShape

    flat = []
    for shape in shapes:
        if isinstance(shape, GroupShape):
            flat.extend(_shapes_in_reading_order(shape.shapes))
        else:
            flat.append(shape)
    return sorted(flat, key=lambda s: ((s.top or 0), (s.left or 0)))


def _text_frame_lines(frame) -> list[str]:  # noqa: ANN001 - pptx TextFrame
    lines = []
    for paragraph in frame.paragraphs:
        text = "".join(run.text for run in paragraph.runs).strip() or paragraph.text.strip()
        if text:
            lines.append("  " * (paragraph.level or 0) + text)
    return lines


def read_pptx(path: Path, options: ReaderOptions | None = None) -> ParsedDocument:
    from pptx import Presentation

    check_office_zip(path, options or DEFAULT_OPTIONS)
    try:
        presentation = Presentation(str(path))
        core_title = _core_title(presentation.core_properties.title, ("powerpoint presentation", "presentation"))
        sections: list[Section] = []
        first_slide_title = ""
        for number, slide in enumerate(presentation.slides, start=1):
            title_shape = slide.shapes.title
            slide_title = ""
            if title_shape is not None and title_shape.has_text_frame:
                slide_title = " ".join(title_shape.text_frame.text.split())
            first_slide_title = first_slide_title or slide_title
            heading = [slide_title] if slide_title else []
            lines: list[str] = []
            tables: list[Section] = []
            for shape in _shapes_in_reading_order(slide.shapes):
                if title_shape is not None and shape.shape_id == title_shape.shape_id:
                    continue
                if getattr(shape, "has_table", False) and shape.has_table:
                    rows = [[cell.text for cell in row.cells] for row in shape.table.rows]
                    tables.extend(table_sections(rows, heading, number))
                elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
                    lines.extend(_text_frame_lines(shape.text_frame))
            notes = ""
            if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
                notes = slide.notes_slide.notes_text_frame.text.strip()
            text = "\n".join(lines)
            if notes:
                text = f"{text}\n\nSpeaker notes:\n{notes}".strip()
            if not text and not tables and slide_title:
                text = slide_title  # a title-only slide still says something
            if text:
                sections.append(Section(text, heading, number))
            sections.extend(tables)
    except DocumentError:
        raise
    except _parser_errors() as exc:
        raise _office_error(path, exc) from exc
    if not sections:
        raise EmptyDocumentError(f"{path.name}: no text found in the presentation: add content or remove it")
    return ParsedDocument(core_title or first_slide_title or title_from_filename(path), sections, "pptx")


# --------------------------------------------------------------------------------------------------------------------
# XLSX
# --------------------------------------------------------------------------------------------------------------------


def _cell_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


def read_xlsx(path: Path, options: ReaderOptions | None = None) -> ParsedDocument:
    import openpyxl

    check_office_zip(path, options or DEFAULT_OPTIONS)
    workbook = None
    try:
        workbook = openpyxl.load_workbook(str(path), read_only=True, data_only=True)
        title = _core_title(workbook.properties.title if workbook.properties else "")
        sections: list[Section] = []
        for sheet in workbook.worksheets:
            if hasattr(sheet, "reset_dimensions"):
                sheet.reset_dimensions()  # stored dimensions are often wrong: read every row there is

            def rows(sheet=sheet) -> Iterator[list[str]]:  # noqa: ANN001
                for row in sheet.iter_rows(values_only=True):
                    yield [_cell_value(v) for v in row]

            sections.extend(streamed_table_sections(rows, [sheet.title]))
        if not workbook.worksheets and not workbook.chartsheets:
            raise DocumentError(
                f"{path.name}: the workbook has no readable worksheet (parts missing: corrupt or incompletely "
                "written): open it in Excel or LibreOffice and save it again"
            )
    except DocumentError:
        raise
    except _parser_errors() as exc:
        raise _office_error(path, exc) from exc
    finally:
        if workbook is not None:
            workbook.close()
    if not sections:
        raise EmptyDocumentError(f"{path.name}: every sheet of the workbook is empty: add data or remove it")
    return ParsedDocument(title or title_from_filename(path), sections, "xlsx")


# --------------------------------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------------------------------

_DELIMITERS = ",;\t|"  # in order of preference on a tie


def _csv_dialect(text: str, path: Path) -> type[csv.Dialect]:
    """The delimiter that splits the first lines into the most consistent number (> 1) of columns.

    (csv.Sniffer is easily fooled by quoted fields that hold newlines or other delimiters.)"""
    if path.suffix.lower() == ".tsv":
        return csv.excel_tab
    sample = text[:65536]
    if len(text) > len(sample) and "\n" in sample:
        sample = sample[: sample.rindex("\n")]  # whole lines only
    best: tuple[float, int] | None = None
    chosen = ","
    for preference, delimiter in enumerate(_DELIMITERS):
        try:
            counts = [len(row) for row in csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter) if row]
        except csv.Error:
            continue
        if not counts:
            continue
        columns = max(set(counts), key=counts.count)
        if columns < 2:
            continue
        score = (counts.count(columns) / len(counts), -preference)
        if best is None or score > best:
            best, chosen = score, delimiter

    class Dialect(csv.excel):
        delimiter = chosen

    return Dialect


def read_csv(path: Path) -> ParsedDocument:
    text = decode_text(path.read_bytes(), path)
    dialect = _csv_dialect(text, path)

    def rows() -> Iterator[list[str]]:
        yield from csv.reader(io.StringIO(text, newline=""), dialect)

    try:
        sections = streamed_table_sections(rows, [])
    except csv.Error as exc:
        raise DocumentError(
            f"{path.name}: not a well-formed CSV file ({exc}): check the quoting, or re-export it as UTF-8 CSV"
        ) from None
    if not sections:
        raise EmptyDocumentError(f"{path.name}: the CSV file has no values: add data or remove it")
    return ParsedDocument(title_from_filename(path), sections, "csv")
