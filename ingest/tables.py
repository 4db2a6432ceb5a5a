"""Tables as Markdown: each in Sections of its own, split into groups of rows that each repeat the header so that
every Section holds a complete table (HTML, DOCX, PPTX, XLSX and CSV readers all use these)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence

from ingest.document import Section

TABLE_ROWS_PER_SECTION = 200  # data rows per Markdown table section (the header is repeated in each)
TABLE_CHARS_PER_SECTION = 20_000  # ... or fewer rows when they are long

_SPACES = re.compile(r"\s+")


def table_cell(value: object) -> str:
    """One Markdown table cell: newlines and runs of whitespace become one space, `|` is escaped."""
    if value is None:
        return ""
    return _SPACES.sub(" ", str(value)).strip().replace("|", "\\|")


def clean_rows(rows: Iterable[Sequence[object]]) -> list[list[str]]:
    """Cells as Markdown text; fully empty rows and columns dropped; rows padded to one width."""
    cleaned = [[table_cell(c) for c in row] for row in rows]
    cleaned = [r for r in cleaned if any(r)]
    if not cleaned:
        return []
    width = max(len(r) for r in cleaned)
    cleaned = [r + [""] * (width - len(r)) for r in cleaned]
    keep = [i for i in range(width) if any(r[i] for r in cleaned)]
    return [[r[i] for i in keep] for r in cleaned]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """`| a | b |` header, `| --- | --- |` separator, then one line per row (cells already cleaned)."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def table_sections(
    rows: Iterable[Sequence[object]],
    heading: list[str],
    page: int | None = None,
    *,
    clean: bool = True,
    rows_per_section: int = TABLE_ROWS_PER_SECTION,
) -> list[Section]:
    """A table as Sections of complete Markdown tables (first row = header, repeated in every section).

    `clean=False` means the rows are already cleaned (strings, no empty rows/columns, one width); they are then
    consumed lazily.
    """
    iterator = iter(clean_rows(rows) if clean else rows)
    header = next(iterator, None)
    if header is None:
        return []
    header = list(header)
    header_chars = sum(len(c) + 3 for c in header)
    sections: list[Section] = []
    group: list[list[str]] = []
    chars = header_chars
    for row in iterator:
        row_chars = sum(len(c) + 3 for c in row)
        if group and (len(group) >= rows_per_section or chars + row_chars > TABLE_CHARS_PER_SECTION):
            sections.append(Section(markdown_table(header, group), list(heading), page))
            group, chars = [], header_chars
        group.append(list(row))
        chars += row_chars
    if group or not sections:
        sections.append(Section(markdown_table(header, group), list(heading), page))
    return sections


def streamed_table_sections(
    make_rows: Callable[[], Iterable[Sequence[object]]], heading: list[str], page: int | None = None
) -> list[Section]:
    """Like table_sections for big tables read twice from their source (a sheet, a CSV) instead of held in memory:
    the first pass finds the non-empty columns, the second builds the sections."""
    used: set[int] = set()
    for row in make_rows():
        for index, value in enumerate(row):
            if index not in used and table_cell(value):
                used.add(index)
    if not used:
        return []
    columns = sorted(used)

    def cleaned() -> Iterator[list[str]]:
        for row in make_rows():
            cells = [table_cell(row[i]) if i < len(row) else "" for i in columns]
            if any(cells):
                yield cells

    return table_sections(cleaned(), heading, page, clean=False)
