"""read_document: one file into a title and a list of sections, by the reader registered for its suffix.

Each format has its module under ``ingest/formats/`` with its SUFFIXES and a ``read(path, options)``; READERS maps
every suffix to its reader, so adding a format is a module and a line in FORMATS. What they share lives beside them:
``ingest.document`` (the dataclasses and text decoding), ``ingest.tables`` (Markdown tables), ``ingest.ocr``
(Tesseract), ``ingest.containers`` (zip checks before any Office parser runs) and ``ingest.mail`` (e-mail messages).

Every reader returns the plain dataclasses of ``ingest.document`` and raises only ``rag.errors.DocumentError``
subclasses whose message starts with the file name, says what is wrong and how to fix it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ingest.document import DEFAULT_OPTIONS, ParsedDocument, ReaderOptions
from ingest.formats import delimited, docx, eml, html, image, markdown, mbox, pdf, pptx, text, xlsx
from rag.errors import DocumentError, EmptyDocumentError, UnsupportedFormatError

Reader = Callable[[Path, ReaderOptions], ParsedDocument]

FORMATS = (markdown, text, html, pdf, docx, pptx, xlsx, delimited, eml, mbox, image)
READERS: dict[str, Reader] = {suffix: module.read for module in FORMATS for suffix in sorted(module.SUFFIXES)}
SUPPORTED = frozenset(READERS)

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
    return READERS[suffix](path, options)
