"""CSV and TSV with the stdlib csv module: the delimiter is detected, the table streamed into Markdown sections."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

from ingest.document import ParsedDocument, ReaderOptions, decode_text, title_from_filename
from ingest.tables import streamed_table_sections
from rag.errors import (
    DocumentError,
    EmptyDocumentError,
)

SUFFIXES = frozenset({".csv", ".tsv"})


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


def read(path: Path, options: ReaderOptions | None = None) -> ParsedDocument:
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
