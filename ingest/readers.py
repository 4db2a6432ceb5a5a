"""Readers turn one file into a title and a list of sections (text + heading path + page).

Markdown goes through llama-index's MarkdownNodeParser, HTML through BeautifulSoup, PDF through pypdf (with
Tesseract OCR for pages without a text layer). Office files, CSV, e-mail and images live in sibling modules:
``ingest.office`` (python-docx, python-pptx, openpyxl, csv), ``ingest.mail`` (stdlib email/mailbox),
``ingest.ocr`` (pytesseract + Pillow) and ``ingest.containers`` (zip checks before any Office parser runs).

Every reader returns plain dataclasses (picklable: they cross a process boundary) and raises only
``rag.errors.DocumentError`` subclasses whose message starts with the file name, says what is wrong and how to fix it.
Tables always come out as Markdown tables, each in its own Section, split into groups of rows that each repeat the
header so that every Section holds a complete table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rag.errors import (
    DocumentError,
    EmptyDocumentError,
    EncryptedDocumentError,
    OcrUnavailableError,
    UnsupportedFormatError,
)

MARKDOWN = {".md", ".markdown"}
TEXT = {".txt", ".text"}
HTML = {".html", ".htm"}
PDF = {".pdf"}
DOCX = {".docx"}
PPTX = {".pptx"}
XLSX = {".xlsx"}
CSV = {".csv", ".tsv"}
EML = {".eml"}
MBOX = {".mbox"}
IMAGES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
SUPPORTED = MARKDOWN | TEXT | HTML | PDF | DOCX | PPTX | XLSX | CSV | EML | MBOX | IMAGES

# Formats people often have that we do not read, with the fix to suggest.
_LEGACY_HINTS = {
    ".doc": "save it as .docx",
    ".xls": "save it as .xlsx",
    ".ppt": "save it as .pptx",
    ".docm": "save it as .docx (without macros)",
    ".xlsm": "save it as .xlsx (without macros)",
    ".pptm": "save it as .pptx (without macros)",
    ".rtf": "save it as .docx",
    ".odt": "save it as .docx",
    ".ods": "save it as .xlsx",
    ".odp": "save it as .pptx",
    ".msg": "save the message as .eml",
}

TABLE_ROWS_PER_SECTION = 200  # data rows per Markdown table section (the header is repeated in each)
TABLE_CHARS_PER_SECTION = 20_000  # ... or fewer rows when they are long


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


@dataclass(frozen=True)
class ReaderOptions:
    ocr: bool = True  # OCR scanned PDFs and images when tesseract is installed
    ocr_languages: str = "eng"
    tesseract_cmd: str | None = None  # None: find `tesseract` on PATH
    max_unzipped_mb: float = 1024.0  # zip-container (Office) bomb caps, checked BEFORE parsing
    max_zip_ratio: float = 100.0
    max_zip_entries: int = 10000


DEFAULT_OPTIONS = ReaderOptions()


def title_from_filename(path: Path) -> str:
    return re.sub(r"[-_]+", " ", path.stem).strip().title()


# --------------------------------------------------------------------------------------------------------------------
# Text decoding
# --------------------------------------------------------------------------------------------------------------------

_BOMS = [
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
]
# On a tie between legacy single-byte encodings, the Western European Windows code page is the likeliest.
_PREFERRED_LEGACY = ("cp1252", "latin_1", "iso8859_15")


def _bomless_utf16(data: bytes) -> str | None:
    """UTF-16 without a BOM: nearly every other byte is NUL and the decoded text is printable."""
    sample = data[:4096]
    if len(sample) < 4:
        return None
    sample = sample[: len(sample) - len(sample) % 2]
    even, odd = sample[0::2], sample[1::2]
    for zeros, encoding in ((odd, "utf-16-le"), (even, "utf-16-be")):
        if zeros.count(0) >= 0.9 * len(zeros):
            try:
                text = data[: len(data) - len(data) % 2].decode(encoding)
            except UnicodeDecodeError:
                return None
            printable = sum(1 for c in text[:2048] if c.isprintable() or c in "\r\n\t")
            return text if printable >= 0.95 * min(len(text), 2048) else None
    return None


def _legacy_decode(data: bytes) -> str | None:
    from charset_normalizer import from_bytes

    results = from_bytes(data)
    best = results.best()
    if best is None:
        return None
    ties = [m for m in results if m.chaos <= best.chaos + 0.01 and m.coherence >= best.coherence - 0.01]
    for preferred in _PREFERRED_LEGACY:
        for match in ties:
            if preferred == match.encoding or preferred in match.could_be_from_charset:
                return data.decode(preferred)
    return str(best)


def decode_text(data: bytes, path: Path) -> str:
    """UTF-8 (with or without BOM), UTF-16/32 with BOM, else the encoding charset-normalizer detects.

    Refuses what is not text rather than guess: NUL bytes (binary), or bytes no encoding explains plausibly.
    """
    if not data.strip():
        raise EmptyDocumentError(f"{path.name}: the file is empty: remove it or add content")
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                text = data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise DocumentError(
                    f"{path.name}: the file starts with a {encoding.upper()} byte-order mark but is not valid "
                    f"{encoding.upper()} ({exc.reason} at byte {exc.start}): re-save the file as UTF-8"
                ) from None
            if not text.strip():
                raise EmptyDocumentError(f"{path.name}: the file is empty: remove it or add content")
            return text
    if b"\x00" in data[:4096]:
        text = _bomless_utf16(data)
        if text is not None:
            return text
        raise UnsupportedFormatError(
            f"{path.name}: binary content in a text file (NUL bytes): check the file type or rename it to its real "
            "extension"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    text = _legacy_decode(data)
    if text is None:
        raise DocumentError(
            f"{path.name}: unknown text encoding (not UTF-8 and no legacy encoding fits): re-save the file as UTF-8"
        )
    return text


# --------------------------------------------------------------------------------------------------------------------
# Markdown tables
# --------------------------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------------------------
# Markdown, text, HTML
# --------------------------------------------------------------------------------------------------------------------


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
        raise EmptyDocumentError(f"{path.name}: no text found in the Markdown file: add content or remove it")
    return ParsedDocument(title or title_from_filename(path), sections, "markdown")


def read_text(path: Path) -> ParsedDocument:
    text = decode_text(path.read_bytes(), path).strip()
    if not text:
        raise EmptyDocumentError(f"{path.name}: the file is empty: remove it or add content")
    return ParsedDocument(title_from_filename(path), [Section(text)], "text")


_HTML_DROP = ["script", "style", "noscript", "template", "nav", "footer", "header", "aside", "form", "svg"]
_HEADINGS = ["h1", "h2", "h3", "h4", "h5", "h6"]
_BLOCKS = ["p", "li", "pre", "blockquote", "dt", "dd", "table", "figcaption"]


def _html_table_rows(table) -> list[list[str]]:  # noqa: ANN001 - bs4 Tag
    rows = []
    for tr in table.find_all("tr"):
        if tr.find_parent("table") is not table:
            continue  # a nested table's rows belong to that table's cell text
        cells = [c.get_text(" ", strip=True) for c in tr.find_all(["th", "td"], recursive=False)]
        if cells:
            rows.append(cells)
    return rows


def _pick_html_parser() -> str:
    """lxml (BSD) is about 3x faster than the pure-Python parser; both ship with our dependencies' tree."""
    try:
        import warnings

        import lxml  # noqa: F401
        from bs4 import XMLParsedAsHTMLWarning

        warnings.filterwarnings("ignore", category=XMLParsedAsHTMLWarning)  # XHTML pages are read as HTML on purpose
        return "lxml"
    except ImportError:  # pragma: no cover - lxml comes with python-docx
        return "html.parser"


_HTML_PARSER = _pick_html_parser()


def html_sections(html: str, base_heading: list[str] | None = None) -> tuple[str, list[Section]]:
    """Title and sections of an HTML page (possibly none); headings h1..h6 extend `base_heading`."""
    from bs4 import BeautifulSoup

    base = list(base_heading or [])
    soup = BeautifulSoup(html, _HTML_PARSER)
    for tag in soup.find_all(_HTML_DROP):
        tag.decompose()
    title = (soup.title.get_text(strip=True) if soup.title else "") or ""
    body = soup.body or soup
    sections: list[Section] = []
    heading: list[str] = []
    current: list[str] = []

    def flush() -> None:
        if current:
            sections.append(Section("\n".join(current), base + heading))
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
            flush()  # a table gets its own section(s), never mixed with prose
            sections.extend(table_sections(_html_table_rows(element), base + heading))
        else:
            text = element.get_text(" ", strip=True)
            if text:
                current.append(("- " if element.name == "li" else "") + text)
    flush()
    if not sections:
        text = body.get_text("\n", strip=True)
        if text:
            sections = [Section(text, base)]
    return title, sections


def read_html(path: Path) -> ParsedDocument:
    title, sections = html_sections(decode_text(path.read_bytes(), path))
    if not sections:
        raise EmptyDocumentError(
            f"{path.name}: no text found in the HTML page (only markup, scripts or navigation): "
            "check that the page was saved with its content"
        )
    return ParsedDocument(title or title_from_filename(path), sections, "html")


# --------------------------------------------------------------------------------------------------------------------
# PDF
# --------------------------------------------------------------------------------------------------------------------

_PLACEHOLDER_TITLES = {"untitled", "untitled document", "title", "none", "null", "document"}
_OCR_MIN_CHARS = 20  # a page with less text than this (a page number, a stamp) and with images gets OCR'd


def _pdf_error(path: Path, exc: Exception) -> DocumentError:
    from pypdf.errors import DependencyError, FileNotDecryptedError

    if isinstance(exc, DocumentError):
        return exc
    if isinstance(exc, FileNotDecryptedError):
        return EncryptedDocumentError(
            f"{path.name}: the PDF is encrypted with a password: supply a decrypted copy (print to PDF or remove "
            "the password)"
        )
    if isinstance(exc, DependencyError):
        return EncryptedDocumentError(
            f"{path.name}: the PDF is encrypted with AES and the `cryptography` package is missing: "
            "pip install cryptography, or supply a decrypted copy"
        )
    return DocumentError(f"{path.name}: not a readable PDF (corrupt or truncated: {exc}): re-export or repair it")


def _page_has_images(page) -> bool:  # noqa: ANN001 - pypdf PageObject
    try:
        return len(page.images) > 0
    except Exception:  # noqa: BLE001 - a broken resource dictionary just means nothing to OCR
        return False


def read_pdf(path: Path, options: ReaderOptions | None = None) -> ParsedDocument:
    """Page by page: the text layer, or OCR of the page's images when it has (almost) none."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    from ingest import ocr

    parse_errors = (PyPdfError, ValueError, KeyError, TypeError, IndexError, AttributeError, AssertionError)
    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            raise EncryptedDocumentError(
                f"{path.name}: the PDF is encrypted with a password: supply a decrypted copy (print to PDF or "
                "remove the password)"
            )
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
        page_count = len(reader.pages)
    except (*parse_errors, RecursionError) as exc:
        raise _pdf_error(path, exc) from exc

    options = options or DEFAULT_OPTIONS
    ocr_reason = ocr.ocr_unavailable_reason(options)
    sections: list[Section] = []
    scanned_pages = 0  # pages that needed OCR
    failed_pages: list[str] = []
    for number in range(1, page_count + 1):
        page = None
        try:
            page = reader.pages[number - 1]
            text = (page.extract_text() or "").strip()
            if len(text) < _OCR_MIN_CHARS and _page_has_images(page):
                scanned_pages += 1
                if ocr_reason is None:
                    recognised = ocr.ocr_pdf_page(page, path, options)
                    text = "\n\n".join(t for t in (text, recognised) if t)
        except DocumentError:
            raise
        except (*parse_errors, RecursionError) as exc:
            failed_pages.append(f"page {number}: {exc}")
            continue
        finally:
            if page is not None:
                ocr.forget_decoded_pdf_data(page)  # one page (and its images) in memory at a time
            page = None
        if text:
            sections.append(Section(text, [], number))
    if not sections:
        if failed_pages:
            raise DocumentError(
                f"{path.name}: not a readable PDF (no page could be read; {failed_pages[0]}): re-export or repair it"
            )
        if scanned_pages and ocr_reason is not None:
            raise OcrUnavailableError(
                f"{path.name}: the PDF has no text layer (scanned?) and {ocr_reason}; or export the PDF with text"
            )
        if scanned_pages:
            raise EmptyDocumentError(
                f"{path.name}: the PDF has no text layer and OCR found no text in its images: check the scan "
                "quality (300 dpi, upright) or export the PDF with text"
            )
        raise EmptyDocumentError(
            f"{path.name}: the PDF has no text layer and no images to OCR (blank or vector drawings only): "
            "export it with text"
        )
    title = str(meta_title).strip()
    if title.lower() in _PLACEHOLDER_TITLES:
        title = ""
    return ParsedDocument(title or title_from_filename(path), sections, "pdf")


# --------------------------------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------------------------------


def unsupported(path: Path) -> UnsupportedFormatError:
    suffix = path.suffix.lower()
    hint = _LEGACY_HINTS.get(suffix)
    fix = f"{hint}, or convert it to one of: " if hint else "convert it to one of: "
    return UnsupportedFormatError(
        f"{path.name}: unsupported file type {suffix or '(none)'}: {fix}{', '.join(sorted(SUPPORTED))}"
    )


def read_document(path: Path, options: ReaderOptions | None = None) -> ParsedDocument:
    """Read one file into a ParsedDocument; raises a DocumentError subclass with a fix hint otherwise."""
    options = options or DEFAULT_OPTIONS
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        raise unsupported(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DocumentError(f"{path.name}: the file does not exist (moved or deleted?): check the path") from None
    if size == 0:
        raise EmptyDocumentError(f"{path.name}: the file is empty (0 bytes): remove it or add content")
    if suffix in MARKDOWN:
        return read_markdown(path)
    if suffix in TEXT:
        return read_text(path)
    if suffix in HTML:
        return read_html(path)
    if suffix in PDF:
        return read_pdf(path, options)
    if suffix in DOCX | PPTX | XLSX | CSV:
        from ingest import office

        if suffix in DOCX:
            return office.read_docx(path, options)
        if suffix in PPTX:
            return office.read_pptx(path, options)
        if suffix in XLSX:
            return office.read_xlsx(path, options)
        return office.read_csv(path)
    if suffix in EML | MBOX:
        from ingest import mail

        return mail.read_eml(path) if suffix in EML else mail.read_mbox(path)
    from ingest import ocr

    return ocr.read_image(path, options)
