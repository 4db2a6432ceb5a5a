"""Readers turn one file into a title and a list of sections (text + heading path + page).

Markdown goes through llama-index's MarkdownNodeParser, HTML through BeautifulSoup, PDF through pypdf (with
Tesseract OCR for pages without a text layer). Office files, CSV, e-mail and images live in sibling modules:
``ingest.office`` (python-docx, python-pptx, openpyxl, csv), ``ingest.mail`` (stdlib email/mailbox),
``ingest.ocr`` (pytesseract + Pillow) and ``ingest.containers`` (zip checks before any Office parser runs).

Every reader returns the plain dataclasses of ``ingest.document`` and raises only ``rag.errors.DocumentError``
subclasses whose message starts with the file name, says what is wrong and how to fix it. Tables always come out as
Markdown tables (``ingest.tables``).
"""

from __future__ import annotations

from pathlib import Path

from ingest.document import (
    DEFAULT_OPTIONS,
    ParsedDocument,
    ReaderOptions,
    Section,
    decode_text,
    title_from_filename,
)
from ingest.html import html_sections
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
