"""What every reader returns and takes: Section, ParsedDocument, ReaderOptions, and the text decoding they share.

Kept apart from the readers so that the format modules, the OCR engine and the zip checks can all import these
without importing each other. Plain dataclasses: they cross the parse worker's process boundary by pickling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from rag.errors import DocumentError, EmptyDocumentError, UnsupportedFormatError


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
