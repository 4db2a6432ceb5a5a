"""PowerPoint with python-pptx (MIT): one page per slide, shapes in reading order, tables as Markdown."""

from __future__ import annotations

from pathlib import Path

from ingest.containers import check_office_zip, office_error, office_parser_errors, office_title
from ingest.document import DEFAULT_OPTIONS, ParsedDocument, ReaderOptions, Section, title_from_filename
from ingest.tables import table_sections
from rag.errors import (
    DocumentError,
    EmptyDocumentError,
)

SUFFIXES = frozenset({".pptx"})


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


def read(path: Path, options: ReaderOptions | None = None) -> ParsedDocument:
    from pptx import Presentation

    check_office_zip(path, options or DEFAULT_OPTIONS)
    try:
        presentation = Presentation(str(path))
        core_title = office_title(presentation.core_properties.title, ("powerpoint presentation", "presentation"))
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
    except office_parser_errors() as exc:
        raise office_error(path, exc) from exc
    if not sections:
        raise EmptyDocumentError(f"{path.name}: no text found in the presentation: add content or remove it")
    return ParsedDocument(core_title or first_slide_title or title_from_filename(path), sections, "pptx")
