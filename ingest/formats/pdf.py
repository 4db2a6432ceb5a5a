"""PDF through pypdf, page by page, with Tesseract OCR (ingest.ocr) for pages without a text layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ingest import ocr
from ingest.document import DEFAULT_OPTIONS, ParsedDocument, ReaderOptions, Section, title_from_filename
from rag.errors import (
    DocumentError,
    EmptyDocumentError,
    EncryptedDocumentError,
    OcrUnavailableError,
)

if TYPE_CHECKING:
    from pypdf import PdfReader

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


@dataclass
class _Pages:
    """What reading the pages found: their text, and why pages gave none."""

    sections: list[Section] = field(default_factory=list)
    scanned: int = 0  # pages that needed OCR
    failed: list[str] = field(default_factory=list)


def _parse_errors() -> tuple[type[BaseException], ...]:
    """What pypdf raises on a corrupt file: its own errors and the builtins its parser lets through."""
    from pypdf.errors import PyPdfError

    return (PyPdfError, ValueError, KeyError, TypeError, IndexError, AttributeError, AssertionError, RecursionError)


def _open(path: Path) -> tuple[PdfReader, str, int]:
    """The decrypted reader, the metadata title and the page count; a locked or unreadable file fails here."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            raise EncryptedDocumentError(
                f"{path.name}: the PDF is encrypted with a password: supply a decrypted copy (print to PDF or "
                "remove the password)"
            )
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
        page_count = len(reader.pages)
    except _parse_errors() as exc:
        raise _pdf_error(path, exc) from exc
    return reader, meta_title, page_count


def _page_text(page, path: Path, options: ReaderOptions, ocr_reason: str | None) -> tuple[str, bool]:  # noqa: ANN001 - pypdf PageObject
    """The page's text layer, with OCR of its images added when it has (almost) none; and whether it needed OCR."""
    text = (page.extract_text() or "").strip()
    if len(text) >= _OCR_MIN_CHARS or not _page_has_images(page):
        return text, False
    if ocr_reason is None:
        recognised = ocr.ocr_pdf_page(page, path, options)
        text = "\n\n".join(t for t in (text, recognised) if t)
    return text, True


def _read_pages(
    reader: PdfReader, page_count: int, path: Path, options: ReaderOptions, ocr_reason: str | None
) -> _Pages:
    """Each page's text, one page (and its images) in memory at a time; a broken page is noted and skipped."""
    pages = _Pages()
    parse_errors = _parse_errors()
    for number in range(1, page_count + 1):
        page = None
        try:
            page = reader.pages[number - 1]
            text, scanned = _page_text(page, path, options, ocr_reason)
        except DocumentError:
            raise
        except parse_errors as exc:
            pages.failed.append(f"page {number}: {exc}")
            continue
        finally:
            if page is not None:
                ocr.forget_decoded_pdf_data(page)
            page = None
        pages.scanned += scanned
        if text:
            pages.sections.append(Section(text, [], number))
    return pages


def _no_text_error(path: Path, pages: _Pages, ocr_reason: str | None) -> DocumentError:
    """Why no page gave text, most telling reason first: broken pages, then OCR missing, then empty scans."""
    if pages.failed:
        return DocumentError(
            f"{path.name}: not a readable PDF (no page could be read; {pages.failed[0]}): re-export or repair it"
        )
    if pages.scanned and ocr_reason is not None:
        return OcrUnavailableError(
            f"{path.name}: the PDF has no text layer (scanned?) and {ocr_reason}; or export the PDF with text"
        )
    if pages.scanned:
        return EmptyDocumentError(
            f"{path.name}: the PDF has no text layer and OCR found no text in its images: check the scan "
            "quality (300 dpi, upright) or export the PDF with text"
        )
    return EmptyDocumentError(
        f"{path.name}: the PDF has no text layer and no images to OCR (blank or vector drawings only): "
        "export it with text"
    )


def _title(meta_title: str, path: Path) -> str:
    """The metadata title unless it is a placeholder such as "Untitled", else one made from the file name."""
    title = str(meta_title).strip()
    if title.lower() in _PLACEHOLDER_TITLES:
        title = ""
    return title or title_from_filename(path)


def read(path: Path, options: ReaderOptions | None = None) -> ParsedDocument:
    """Page by page: the text layer, or OCR of the page's images when it has (almost) none."""
    reader, meta_title, page_count = _open(path)
    options = options or DEFAULT_OPTIONS
    ocr_reason = ocr.ocr_unavailable_reason(options)
    pages = _read_pages(reader, page_count, path, options, ocr_reason)
    if not pages.sections:
        raise _no_text_error(path, pages, ocr_reason)
    return ParsedDocument(_title(meta_title, path), pages.sections, "pdf")
