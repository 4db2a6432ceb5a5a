"""Broken, hostile or odd input: each gets a specific error class and a message that names the file and the fix."""

from __future__ import annotations

import random
import shutil
import zipfile
from pathlib import Path

import pytest

from ingest.document import ReaderOptions
from ingest.readers import read_document
from rag.errors import (
    DocumentError,
    EmptyDocumentError,
    EncryptedDocumentError,
    OcrUnavailableError,
    UnsupportedFormatError,
)
from tests.fixtures import makers

needs_tesseract = pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract-ocr is not installed")


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def expect(path: Path, error: type[DocumentError], *words: str, options: ReaderOptions | None = None) -> str:
    with pytest.raises(error) as caught:
        read_document(path, options)
    message = caught.value.message
    assert message.startswith(f"{path.name}: "), message
    for word in words:
        assert word.lower() in message.lower(), (word, message)
    return message


# --- Text --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["empty.txt", "empty.pdf", "empty.docx", "empty.png", "empty.eml", "empty.mbox"])
def test_zero_byte_files(tmp_path: Path, name: str):
    expect(write(tmp_path / name, b""), EmptyDocumentError, "empty", "0 bytes")


def test_binary_garbage_as_text(tmp_path: Path):
    rng = random.Random(1)
    garbage = bytes(rng.randrange(256) for _ in range(4096))
    expect(write(tmp_path / "dump.txt", garbage), UnsupportedFormatError, "binary content")


def test_unknown_encoding(tmp_path: Path):
    rng = random.Random(2)
    noise = bytes(rng.randrange(0x80, 0x100) for _ in range(3000))  # no NUL bytes, no plausible encoding
    expect(write(tmp_path / "noise.txt", noise), DocumentError, "unknown text encoding", "UTF-8")


def test_latin1_text_decodes_correctly(tmp_path: Path):
    path = write(tmp_path / "prix.txt", "Prix: 12 £ pour le café, très bien.".encode("latin-1"))
    assert read_document(path).sections[0].text == "Prix: 12 £ pour le café, très bien."
    short = write(tmp_path / "short.txt", "Café £5".encode("latin-1"))
    assert read_document(short).sections[0].text == "Café £5"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-8-sig"])
def test_unicode_with_and_without_bom(tmp_path: Path, encoding: str):
    path = write(tmp_path / "notes.md", "# Notes\n\nGrüße aus Köln, 5 € für Kaffee.\n".encode(encoding))
    doc = read_document(path)
    assert doc.title == "Notes" and doc.sections[0].text == "Grüße aus Köln, 5 € für Kaffee."


def test_shift_jis_text(tmp_path: Path):
    text = "日本語のテキストです。会議は明日の午後三時に始まります。"
    assert read_document(write(tmp_path / "jp.txt", text.encode("shift_jis"))).sections[0].text == text


def test_html_without_text(tmp_path: Path):
    html = b"<html><head><script>var x = 1;</script></head><body><nav><a href='/'>Home</a></nav></body></html>"
    expect(write(tmp_path / "shell.html", html), EmptyDocumentError, "no text found", "HTML")


def test_unsupported_extensions(tmp_path: Path):
    expect(write(tmp_path / "tool.exe", b"MZ\x90\x00"), UnsupportedFormatError, "unsupported file type .exe")
    expect(write(tmp_path / "old.doc", b"\xd0\xcf\x11\xe0"), UnsupportedFormatError, "save it as .docx")
    expect(write(tmp_path / "README", b"hello"), UnsupportedFormatError, "(none)")


def test_missing_file(tmp_path: Path):
    expect(tmp_path / "gone.pdf", DocumentError, "does not exist")


def test_malformed_csv(tmp_path: Path):
    path = write(tmp_path / "long.csv", b'a,b\n1,"' + b"x" * 200_000 + b'"\n')
    expect(path, DocumentError, "CSV", "re-export")


# --- PDF ---------------------------------------------------------------------------------------------------------


def test_truncated_pdf(tmp_path: Path):
    whole = makers.make_text_pdf(tmp_path / "whole.pdf", ["Page one.", "Page two."]).read_bytes()
    expect(write(tmp_path / "cut.pdf", whole[: len(whole) // 2]), DocumentError, "not a readable PDF", "re-export")


def test_not_a_pdf(tmp_path: Path):
    expect(write(tmp_path / "fake.pdf", b"<html>this is a web page</html>"), DocumentError, "not a readable PDF")


def test_encrypted_pdf(tmp_path: Path):
    path = makers.make_encrypted_pdf(tmp_path / "salaries.pdf", "secret")
    expect(path, EncryptedDocumentError, "encrypted", "decrypted copy")


def test_empty_password_pdf_reads(tmp_path: Path):
    doc = read_document(makers.make_encrypted_pdf(tmp_path / "open.pdf", ""))
    assert "Confidential salary bands." in doc.sections[0].text


def test_blank_pdf_without_images(tmp_path: Path):
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.write(tmp_path / "blank.pdf")
    expect(tmp_path / "blank.pdf", EmptyDocumentError, "no text layer", options=ReaderOptions(ocr=False))


def test_scanned_pdf_without_ocr(tmp_path: Path):
    path = makers.make_scanned_pdf(tmp_path / "scan.pdf")
    options = ReaderOptions(tesseract_cmd=str(tmp_path / "no-such-tesseract"))
    expect(path, OcrUnavailableError, "no text layer", "OCR not available", "tesseract-ocr", options=options)


# --- Office containers -------------------------------------------------------------------------------------------


def test_zip_bomb_docx_is_refused_before_parsing(tmp_path: Path):
    path = makers.make_zip_bomb_docx(tmp_path / "bomb.docx")
    assert path.stat().st_size < 1_000_000
    expect(path, DocumentError, "zip bomb")


def test_office_unpacked_size_and_entry_limits(tmp_path: Path):
    path = makers.make_docx(tmp_path / "report.docx")
    expect(path, DocumentError, "too large when unpacked", options=ReaderOptions(max_unzipped_mb=0.001))
    expect(path, DocumentError, "zip entries", "zip bomb", options=ReaderOptions(max_zip_entries=3))


@pytest.mark.parametrize("suffix", [".docx", ".pptx", ".xlsx"])
def test_not_a_zip(tmp_path: Path, suffix: str):
    path = write(tmp_path / f"renamed{suffix}", b"just some text, saved with the wrong extension")
    expect(path, DocumentError, "not a valid Office file", "re-save")


def test_corrupt_pptx_missing_parts(tmp_path: Path):
    expect(makers.make_corrupt_office(tmp_path / "deck.pptx"), DocumentError, "PowerPoint", "corrupt", "save it again")


def test_corrupt_xlsx_missing_parts(tmp_path: Path):
    expect(makers.make_corrupt_office(tmp_path / "book.xlsx"), DocumentError, "corrupt", "save it again")


def test_corrupt_xlsx_broken_xml(tmp_path: Path):
    source = makers.make_xlsx(tmp_path / "source.xlsx")
    broken = tmp_path / "broken.xlsx"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(broken, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, data[: len(data) // 2] if info.filename == "xl/workbook.xml" else data)
    expect(broken, DocumentError, "Excel", "corrupt", "save it again")


def test_corrupt_docx_missing_main_part(tmp_path: Path):
    expect(makers.make_corrupt_office(tmp_path / "memo.docx"), DocumentError, "Word", "save it again")


def test_legacy_binary_office_file_renamed(tmp_path: Path):
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504)
    expect(write(tmp_path / "old.docx", ole), UnsupportedFormatError, "old binary Word file", "save it as .docx")
    encrypted = ole + "EncryptionInfo".encode("utf-16-le") + bytes(100)
    expect(write(tmp_path / "locked.xlsx", encrypted), EncryptedDocumentError, "password", "remove the password")


# --- Mail --------------------------------------------------------------------------------------------------------


def test_empty_mbox(tmp_path: Path):
    expect(write(tmp_path / "none.mbox", b"\n\n"), EmptyDocumentError, "empty")
    expect(write(tmp_path / "notes.mbox", b"just some notes\nno messages\n"), EmptyDocumentError, "no messages")


def test_eml_that_is_not_a_message(tmp_path: Path):
    expect(write(tmp_path / "note.eml", b"hello there\n"), DocumentError, "not an e-mail message", ".eml")
    expect(write(tmp_path / "bin.eml", b"From: a\x00\x01\x02"), UnsupportedFormatError, "binary content")


# --- Images ------------------------------------------------------------------------------------------------------


@needs_tesseract
def test_image_without_text(tmp_path: Path):
    path = makers.make_image_with_text(tmp_path / "blank.png", [])
    expect(path, EmptyDocumentError, "OCR found no text")


def test_corrupt_image(tmp_path: Path):
    expect(write(tmp_path / "photo.jpg", b"\xff\xd8\xff not really a jpeg"), DocumentError, "image", "re-save")


def test_truncated_image(tmp_path: Path):
    data = makers.make_image_with_text(tmp_path / "full.png").read_bytes()
    path = write(tmp_path / "cut.png", data[: len(data) // 2])
    if shutil.which("tesseract") is None:
        pytest.skip("tesseract-ocr is not installed: the pixels are only decoded for OCR")
    expect(path, DocumentError, "could not be decoded", "re-save")


def test_decompression_bomb_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from PIL import Image

    path = makers.make_image_with_text(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    expect(path, DocumentError, "too large", "decompression bomb")


def test_image_without_ocr(tmp_path: Path):
    path = makers.make_image_with_text(tmp_path / "scan.png")
    expect(path, OcrUnavailableError, "OCR not available", "turned off", options=ReaderOptions(ocr=False))
