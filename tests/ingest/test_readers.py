from pathlib import Path

import pytest

from ingest.readers import read_document
from rag.errors import DocumentError, EmptyDocumentError, EncryptedDocumentError, UnsupportedFormatError
from tests.conftest import SAMPLE_CORPUS


def test_markdown_keeps_title_and_heading_path(tmp_path: Path):
    path = tmp_path / "guide.md"
    path.write_text(
        "# Handbook\n\nIntro text.\n\n## Leave\n\n### Annual leave\n\nYou get 26 days.\n\n```\n# not a heading\n```\n"
    )
    doc = read_document(path)
    assert doc.title == "Handbook"
    by_text = {s.text.splitlines()[0]: s.heading for s in doc.sections}
    assert by_text["Intro text."] == ["Handbook"]
    assert by_text["You get 26 days."] == ["Handbook", "Leave", "Annual leave"]


def test_html_drops_navigation_scripts_and_keeps_tables_as_markdown():
    doc = read_document(SAMPLE_CORPUS / "travel-and-expenses.html")
    text = "\n".join(s.text for s in doc.sections)
    assert doc.title
    assert "<script" not in text and "function" not in text
    assert "| " in text and "--- |" in text  # the per-diem table as a Markdown table
    assert any("Frankfurt" in s.text and s.heading for s in doc.sections)


def test_pdf_sections_carry_page_numbers_and_metadata_title():
    doc = read_document(SAMPLE_CORPUS / "benefits-summary.pdf")
    assert doc.title == "Benefits Summary 2026"
    assert [s.page for s in doc.sections] == [1, 2, 3]
    assert "pension" in doc.sections[0].text.lower()


def test_plain_text_title_from_file_name():
    doc = read_document(SAMPLE_CORPUS / "onboarding-checklist.txt")
    assert doc.title == "Onboarding Checklist"
    assert doc.sections[0].text


def test_legacy_encoding_is_detected_not_garbled(tmp_path: Path):
    path = tmp_path / "notes.txt"
    path.write_bytes(
        "Les congés sont accordés après la période d'essai, à raison de 2,5 jours par mois.".encode("cp1252")
    )
    assert "congés" in read_document(path).sections[0].text


@pytest.mark.parametrize(
    ("name", "content", "error", "message"),
    [
        ("empty.md", b"", EmptyDocumentError, "empty"),
        ("blank.txt", b"   \n\n  ", EmptyDocumentError, "empty"),
        ("binary.txt", bytes(range(256)) * 4, UnsupportedFormatError, "binary"),
        ("tool.exe", b"MZ\x90\x00", UnsupportedFormatError, "unsupported file type"),
        ("broken.pdf", b"%PDF-1.7 this is not really a pdf", DocumentError, "PDF"),
    ],
)
def test_bad_files_get_a_clear_reason(tmp_path: Path, name, content, error, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(error, match=message):
        read_document(path)


def test_encrypted_and_textless_pdfs(tmp_path: Path):
    from pypdf import PdfWriter

    blank = PdfWriter()
    blank.add_blank_page(width=200, height=200)
    blank.write(tmp_path / "scan.pdf")
    with pytest.raises(EmptyDocumentError, match="no text layer"):
        read_document(tmp_path / "scan.pdf")
    locked = PdfWriter(clone_from=SAMPLE_CORPUS / "benefits-summary.pdf")
    locked.encrypt(user_password="secret", algorithm="RC4-128")
    locked.write(tmp_path / "locked.pdf")
    with pytest.raises(EncryptedDocumentError, match="encrypted"):
        read_document(tmp_path / "locked.pdf")
    # An owner-password-only PDF opens with the empty password and is read normally.
    open_pdf = PdfWriter(clone_from=SAMPLE_CORPUS / "benefits-summary.pdf")
    open_pdf.encrypt(user_password="", owner_password="owner", algorithm="RC4-128")
    open_pdf.write(tmp_path / "owner-only.pdf")
    assert len(read_document(tmp_path / "owner-only.pdf").sections) == 3
