"""Excel workbooks with openpyxl (MIT), read-only and streamed: Markdown tables per sheet, the sheet name as
heading."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

from ingest.containers import check_office_zip, office_error, office_parser_errors, office_title
from ingest.document import DEFAULT_OPTIONS, ParsedDocument, ReaderOptions, Section, title_from_filename
from ingest.tables import streamed_table_sections
from rag.errors import (
    DocumentError,
    EmptyDocumentError,
)

SUFFIXES = frozenset({".xlsx"})


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


def read(path: Path, options: ReaderOptions | None = None) -> ParsedDocument:
    import openpyxl

    check_office_zip(path, options or DEFAULT_OPTIONS)
    workbook = None
    try:
        workbook = openpyxl.load_workbook(str(path), read_only=True, data_only=True)
        title = office_title(workbook.properties.title if workbook.properties else "")
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
    except office_parser_errors() as exc:
        raise office_error(path, exc) from exc
    finally:
        if workbook is not None:
            workbook.close()
    if not sections:
        raise EmptyDocumentError(f"{path.name}: every sheet of the workbook is empty: add data or remove it")
    return ParsedDocument(title or title_from_filename(path), sections, "xlsx")
