"""Checks on zip containers (DOCX, PPTX, XLSX) made BEFORE any parser unpacks them, and the errors of those parsers.

A zip bomb is refused from its central directory alone (sizes, ratios, entry count): nothing is decompressed here.
The declared sizes can be trusted as bounds because Python's zipfile, which python-docx, python-pptx and openpyxl
use, never inflates a member past its declared size (it fails the CRC check instead).
"""

from __future__ import annotations

import importlib
import zipfile
import zlib
from pathlib import Path
from xml.etree.ElementTree import ParseError

from ingest.document import DEFAULT_OPTIONS, ReaderOptions
from rag.errors import DocumentError, EncryptedDocumentError, UnsupportedFormatError

MB = 1024 * 1024
RATIO_MIN_MEMBER_BYTES = 1 * MB  # small XML parts compress very well and are harmless: judge only bigger members

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # legacy .doc/.xls/.ppt, and password-protected Office files

# suffix -> (application, the part that must exist, legacy suffix)
OFFICE_KINDS = {
    ".docx": ("Word", "word/document.xml", ".doc"),
    ".pptx": ("PowerPoint", "ppt/presentation.xml", ".ppt"),
    ".xlsx": ("Excel", "xl/workbook.xml", ".xls"),
}


def _main_part(names: set[str], expected: str) -> bool:
    # Some producers write a different main part name; [Content_Types].xml plus the folder is enough to try.
    folder = expected.split("/", 1)[0] + "/"
    return expected in names or any(n.startswith(folder) for n in names)


def check_office_zip(path: Path, options: ReaderOptions | None = None) -> None:
    """Raise a DocumentError if `path` is not a sane Office zip: not a zip, encrypted, a zip bomb, parts missing."""
    options = options or DEFAULT_OPTIONS
    app, main_part, legacy = OFFICE_KINDS[path.suffix.lower()]
    with path.open("rb") as handle:
        magic = handle.read(8)
    if magic == _OLE_MAGIC:
        if _ole_is_encrypted(path):
            raise EncryptedDocumentError(
                f"{path.name}: the {app} file is encrypted (password-protected): remove the password in {app} and "
                "save it again"
            )
        raise UnsupportedFormatError(
            f"{path.name}: this is an old binary {app} file ({legacy}) with a {path.suffix} name: open it in {app} "
            f"or LibreOffice and save it as {path.suffix}"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise DocumentError(
            f"{path.name}: not a valid Office file (corrupt or renamed; {exc}): re-save it in {app} or LibreOffice"
        ) from None
    if len(infos) > options.max_zip_entries:
        raise DocumentError(
            f"{path.name}: the {app} file has {len(infos)} zip entries (limit {options.max_zip_entries}): "
            "possible zip bomb; re-save it or raise the limit max_zip_entries"
        )
    unpacked = sum(info.file_size for info in infos)
    if unpacked > options.max_unzipped_mb * MB:
        raise DocumentError(
            f"{path.name}: too large when unpacked ({unpacked / MB:.0f} MB, limit {options.max_unzipped_mb:g} MB): "
            "possible zip bomb; split the file or raise the setting ingest.max_unzipped_mb"
        )
    for info in infos:
        if info.file_size > RATIO_MIN_MEMBER_BYTES:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > options.max_zip_ratio:
                raise DocumentError(
                    f"{path.name}: zip bomb suspected: member {info.filename} unpacks {ratio:.0f}x "
                    f"({info.file_size / MB:.0f} MB, limit ratio {options.max_zip_ratio:g}): remove it or raise the "
                    "setting ingest.max_zip_ratio"
                )
    names = {info.filename for info in infos}
    if "[Content_Types].xml" not in names or not _main_part(names, main_part):
        missing = "[Content_Types].xml" if "[Content_Types].xml" not in names else main_part
        raise DocumentError(
            f"{path.name}: not a valid {app} file (the zip lacks {missing}; corrupt, or another format renamed to "
            f"{path.suffix}): re-save it in {app} or LibreOffice"
        )


def _ole_is_encrypted(path: Path) -> bool:
    """An encrypted OOXML file is an OLE compound file holding an "EncryptionInfo" stream (UTF-16 directory name)."""
    marker = "EncryptionInfo".encode("utf-16-le")
    tail = b""
    with path.open("rb") as handle:
        while chunk := handle.read(MB):
            if marker in tail + chunk:
                return True
            tail = chunk[-len(marker) :]
    return False


# --------------------------------------------------------------------------------------------------------------------
# Parser errors
# --------------------------------------------------------------------------------------------------------------------


def office_parser_errors() -> tuple[type[BaseException], ...]:
    """What the Office parsers raise on a damaged file (they have no common base class)."""
    errors: list[type[BaseException]] = [
        KeyError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        AssertionError,
        NotImplementedError,
        RecursionError,
        EOFError,
        OSError,
        zipfile.BadZipFile,
        zlib.error,
        ParseError,
    ]
    try:
        from lxml.etree import LxmlError

        errors.append(LxmlError)
    except ImportError:  # pragma: no cover - lxml comes with python-docx/python-pptx
        pass
    for module, name in (
        ("docx.opc.exceptions", "OpcError"),
        ("pptx.exc", "PythonPptxError"),
        ("openpyxl.utils.exceptions", "InvalidFileException"),
    ):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):  # pragma: no cover
            pass
    return tuple(errors)


def office_error(path: Path, exc: BaseException) -> DocumentError:
    app = OFFICE_KINDS[path.suffix.lower()][0]
    detail = f"{type(exc).__name__}: {exc}"[:300]
    return DocumentError(
        f"{path.name}: the {app} file could not be read, it may be corrupt ({detail}): open it in {app} or "
        "LibreOffice and save it again"
    )


def office_title(value: object, junk: tuple[str, ...] = ()) -> str:
    title = str(value or "").strip()
    return "" if title.lower() in junk else title
