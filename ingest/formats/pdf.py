"""PDF through pypdf, page by page, with Tesseract OCR (ingest.ocr) for pages without a text layer."""

from __future__ import annotations

from pathlib import Path

from ingest import ocr
from ingest.document import DEFAULT_OPTIONS, ParsedDocument, ReaderOptions, Section, title_from_filename
from rag.errors import (
    DocumentError,
    EmptyDocumentError,
    EncryptedDocumentError,
    OcrUnavailableError,
)

SUFFIXES = frozenset({".pdf"})


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


def read(path: Path, options: ReaderOptions | None = None) -> ParsedDocument:
    """Page by page: the text layer, or OCR of the page's images when it has (almost) none."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

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
