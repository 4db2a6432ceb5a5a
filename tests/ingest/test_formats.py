"""Every supported format reads into title, heading path, pages and Markdown tables. Fixtures are built per test."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest

from ingest.document import ParsedDocument, ReaderOptions
from ingest.ocr import ocr_available, ocr_unavailable_reason
from ingest.readers import SUPPORTED, read_document
from rag.errors import OcrUnavailableError
from tests.fixtures import makers

needs_tesseract = pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract-ocr is not installed")
NO_TESSERACT = ReaderOptions(tesseract_cmd="/nonexistent/bin/tesseract")
OCR_OFF = ReaderOptions(ocr=False)


def all_text(doc: ParsedDocument) -> str:
    return "\n".join(s.text for s in doc.sections)


def table_sections(doc: ParsedDocument) -> list:
    return [s for s in doc.sections if s.text.startswith("| ")]


def assert_markdown_tables_are_whole(doc: ParsedDocument) -> None:
    """A section holding a table holds only that table: header, separator, rows."""
    for section in table_sections(doc):
        lines = section.text.splitlines()
        assert all(line.startswith("| ") and line.endswith(" |") for line in lines), section.text
        assert set(lines[1].replace("|", "").split()) == {"---"}


def test_supported_suffixes():
    expected = {".md", ".txt", ".html", ".pdf", ".docx", ".pptx", ".xlsx", ".csv", ".eml", ".mbox"}
    expected |= {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
    assert expected <= SUPPORTED


def test_reader_options_defaults_are_frozen():
    options = ReaderOptions()
    assert (options.ocr, options.ocr_languages, options.tesseract_cmd) == (True, "eng", None)
    assert (options.max_unzipped_mb, options.max_zip_ratio, options.max_zip_entries) == (1024.0, 100.0, 10000)
    with pytest.raises(AttributeError):
        options.ocr = False  # type: ignore[misc]


# --- DOCX ------------------------------------------------------------------------------------------------------------


def test_docx_headings_tables_and_lists_in_document_order(tmp_path: Path):
    doc = read_document(makers.make_docx(tmp_path / "q2.docx"))
    assert doc.doc_type == "docx"
    assert doc.title == "Quarterly Report"  # from the Title paragraph
    headings = [s.heading for s in doc.sections]
    assert headings[0] == ["Quarterly Report"]
    texts = [s.text for s in doc.sections]
    sales = texts.index("Sales grew in every region.")
    assert doc.sections[sales].heading == ["Quarterly Report", "Sales"]
    # the table comes right after the paragraph before it, in its own section, under the same heading
    table = doc.sections[sales + 1]
    assert table.heading == ["Quarterly Report", "Sales"]
    assert table.text.splitlines()[:3] == ["| City | Revenue |", "| --- | --- |", "| Berlin | 120 |"]
    assert texts[sales + 2] == "Figures are in thousands of euros."
    outlook = next(s for s in doc.sections if "stable" in s.text)
    assert outlook.heading == ["Quarterly Report", "Sales", "Outlook"]
    assert "- Hire two engineers\n- Open the Madrid office" in outlook.text
    risks = next(s for s in doc.sections if "Currency" in s.text)
    assert risks.heading == ["Quarterly Report", "Risks"]
    assert all(s.page is None for s in doc.sections)
    assert_markdown_tables_are_whole(doc)


def test_docx_core_title_wins_and_cells_are_escaped(tmp_path: Path):
    table = [["Item", "Note"], ["A|B", "first line\nsecond line"]]
    doc = read_document(makers.make_docx(tmp_path / "x.docx", core_title="Board Pack", table=table))
    assert doc.title == "Board Pack"
    assert "| A\\|B | first line second line |" in all_text(doc)


# --- PPTX ------------------------------------------------------------------------------------------------------------


def test_pptx_one_section_per_slide_with_tables_and_notes(tmp_path: Path):
    doc = read_document(makers.make_pptx(tmp_path / "deck.pptx"))
    assert doc.doc_type == "pptx"
    assert doc.title == "Roadmap 2026"  # no core title: the first slide's title
    assert doc.sections[0].heading == ["Roadmap 2026"] and doc.sections[0].page == 1
    assert "Product plans for next year" in doc.sections[0].text
    slide2 = [s for s in doc.sections if s.page == 2]
    assert all(s.heading == ["Regional revenue"] for s in slide2)
    prose, table = slide2
    assert "Revenue by city" in prose.text and "Berlin is ahead of plan." in prose.text
    assert "| Berlin | 120 |" in table.text and "Speaker notes" not in table.text
    slide3 = next(s for s in doc.sections if s.page == 3)
    assert slide3.heading == ["Next steps"]
    assert "Hire two engineers" in slide3.text and "Remember to mention the budget." in slide3.text
    assert_markdown_tables_are_whole(doc)


def test_pptx_core_title(tmp_path: Path):
    assert read_document(makers.make_pptx(tmp_path / "d.pptx", core_title="Strategy Day")).title == "Strategy Day"


# --- XLSX ------------------------------------------------------------------------------------------------------------


def test_xlsx_one_table_per_sheet_skipping_empty_rows_and_columns(tmp_path: Path):
    doc = read_document(makers.make_xlsx(tmp_path / "book.xlsx", title="Finance 2026"))
    assert doc.doc_type == "xlsx" and doc.title == "Finance 2026"
    revenue, staff = doc.sections
    assert revenue.heading == ["Revenue"] and staff.heading == ["Staff"]
    assert revenue.text.splitlines() == [
        "| City | Revenue |",
        "| --- | --- |",
        "| Berlin | 120 |",
        "| Paris | 95 |",
        "| Madrid | 80 |",
    ]
    assert "| Ada | 2024-03-01 | 0.8 |" in staff.text
    assert "| Linus | 2023-01-09 | 1 |" in staff.text


def test_xlsx_big_sheet_splits_into_complete_tables(tmp_path: Path):
    rows = [["Id", "Name", None, "Score"]] + [[i, f"name {i}", None, i * 2] for i in range(1, 451)]
    doc = read_document(makers.make_xlsx(tmp_path / "big.xlsx", {"Scores": rows}))
    assert len(doc.sections) == 3
    for section in doc.sections:
        lines = section.text.splitlines()
        assert lines[0] == "| Id | Name | Score |" and lines[1] == "| --- | --- | --- |"
        assert len(lines) - 2 <= 200
        assert section.heading == ["Scores"]
    body = [line for s in doc.sections for line in s.text.splitlines()[2:]]
    assert len(body) == 450 and body[0] == "| 1 | name 1 | 2 |" and body[-1] == "| 450 | name 450 | 900 |"


# --- CSV -------------------------------------------------------------------------------------------------------------


def test_csv_markdown_table(tmp_path: Path):
    doc = read_document(makers.make_csv(tmp_path / "cities.csv"))
    assert doc.doc_type == "csv" and doc.title == "Cities"
    assert doc.sections[0].text.splitlines()[:3] == ["| City | Revenue |", "| --- | --- |", "| Berlin | 120 |"]


def test_csv_semicolons_legacy_encoding_and_quoted_newlines(tmp_path: Path):
    rows = [["Stadt", "Größe", "Notiz"], ["Köln", "1,5", "a | b"], ["Zürich", "2,0", "line one\nline two"]]
    doc = read_document(makers.make_csv(tmp_path / "orte.csv", rows, delimiter=";", encoding="cp1252"))
    text = all_text(doc)
    assert "| Stadt | Größe | Notiz |" in text
    assert "| Köln | 1,5 | a \\| b |" in text
    assert "| Zürich | 2,0 | line one line two |" in text


def test_csv_big_file_repeats_header(tmp_path: Path):
    rows = [["n", "square"]] + [[i, i * i] for i in range(1000)]
    doc = read_document(makers.make_csv(tmp_path / "squares.csv", rows))
    assert len(doc.sections) == 5
    assert all(s.text.startswith("| n | square |\n| --- | --- |\n") for s in doc.sections)


# --- HTML, PDF -------------------------------------------------------------------------------------------------------


def test_html_table_gets_its_own_section(tmp_path: Path):
    path = tmp_path / "page.html"
    path.write_text(
        "<html><body><h1>Offices</h1><p>Our sites.</p><table><tr><th>City</th><th>Staff</th></tr>"
        "<tr><td>Berlin</td><td>120</td></tr></table><p>More soon.</p></body></html>"
    )
    doc = read_document(path)
    assert [s.text for s in doc.sections] == [
        "Our sites.",
        "| City | Staff |\n| --- | --- |\n| Berlin | 120 |",
        "More soon.",
    ]
    assert all(s.heading == ["Offices"] for s in doc.sections)


def test_text_pdf_pages_and_title(tmp_path: Path):
    path = makers.make_text_pdf(
        tmp_path / "policy.pdf", ["Leave policy page one.", "Travel policy page two."], title="Policies"
    )
    doc = read_document(path)
    assert doc.doc_type == "pdf" and doc.title == "Policies"
    assert [(s.page, s.text) for s in doc.sections] == [(1, "Leave policy page one."), (2, "Travel policy page two.")]


def test_pdf_with_empty_user_password_reads(tmp_path: Path):
    doc = read_document(makers.make_encrypted_pdf(tmp_path / "open.pdf", ""))
    assert "salary bands" in all_text(doc)


# --- E-mail ----------------------------------------------------------------------------------------------------------


def test_eml_headers_body_and_attachments(tmp_path: Path):
    doc = read_document(makers.make_eml(tmp_path / "mail.eml"))
    assert doc.doc_type == "eml" and doc.title == "Quarterly numbers"
    header, body, attachment = doc.sections
    assert header.heading == body.heading == ["Quarterly numbers"]
    assert "From: Ada Lovelace <ada@example.com>" in header.text
    assert "To: Team <team@example.com>" in header.text and "Date: Mon, 02 Mar 2026" in header.text
    assert "Attachments: notes.txt, report.pdf" in header.text
    assert "Berlin reached 120k in Q2." in body.text
    assert attachment.heading == ["Quarterly numbers", "notes.txt"]
    assert attachment.text == "Meeting notes: approve the Madrid budget."


def test_eml_html_only_body_uses_the_html_reader(tmp_path: Path):
    html = "<html><body><script>x()</script><h2>Update</h2><p>The launch moves to May.</p></body></html>"
    doc = read_document(makers.make_eml(tmp_path / "h.eml", subject="Launch", body="", html=html, attachments=()))
    body = next(s for s in doc.sections if "launch moves" in s.text)
    assert body.heading == ["Launch", "Update"]
    assert "x()" not in all_text(doc)


def test_eml_prefers_plain_text_alternative(tmp_path: Path):
    doc = read_document(
        makers.make_eml(tmp_path / "alt.eml", body="Plain version.", html="<p>HTML version.</p>", attachments=())
    )
    assert "Plain version." in all_text(doc) and "HTML version." not in all_text(doc)


def test_mbox_messages_are_pages(tmp_path: Path):
    doc = read_document(makers.make_mbox(tmp_path / "team.mbox"))
    assert doc.doc_type == "mbox" and doc.title == "Team"
    assert {s.page for s in doc.sections} == {1, 2, 3}
    for number in (1, 2, 3):
        mine = [s for s in doc.sections if s.page == number]
        assert all(s.heading == [f"Message {number}"] for s in mine)
        assert any(s.text == f"Body of message {number}." for s in mine)


# --- OCR -------------------------------------------------------------------------------------------------------------


def test_ocr_available_follows_options():
    assert not ocr_available(OCR_OFF)
    assert "turned off" in ocr_unavailable_reason(OCR_OFF)
    assert "ingest.ocr" in ocr_unavailable_reason(OCR_OFF)
    assert not ocr_available(NO_TESSERACT)
    assert "OCR not available" in ocr_unavailable_reason(NO_TESSERACT)
    assert ocr_available() == (shutil.which("tesseract") is not None)


@needs_tesseract
@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tiff"])
def test_image_ocr(tmp_path: Path, suffix: str):
    doc = read_document(makers.make_image_with_text(tmp_path / f"invoice{suffix}"))
    assert doc.doc_type == "image" and doc.title == "Invoice"
    text = all_text(doc).lower()
    assert "invoice" in text and "4711" in text and "total" in text


@needs_tesseract
def test_scanned_pdf_is_ocrd_page_by_page(tmp_path: Path):
    doc = read_document(makers.make_scanned_pdf(tmp_path / "scan.pdf", pages=2))
    assert [s.page for s in doc.sections] == [1, 2]
    assert all("invoice" in s.text.lower() and "4711" in s.text for s in doc.sections)


@pytest.mark.parametrize("options", [NO_TESSERACT, OCR_OFF], ids=["missing-tesseract", "ocr-off"])
def test_ocr_unavailable_says_how_to_fix(tmp_path: Path, options: ReaderOptions):
    scan = makers.make_scanned_pdf(tmp_path / "scan.pdf")
    with pytest.raises(OcrUnavailableError, match="scan.pdf: .*OCR not available") as pdf_error:
        read_document(scan, options)
    image = makers.make_image_with_text(tmp_path / "photo.png")
    with pytest.raises(OcrUnavailableError, match="photo.png: .*OCR not available") as image_error:
        read_document(image, options)
    for error in (pdf_error, image_error):
        message = str(error.value)
        assert ("tesseract-ocr" in message) if options is NO_TESSERACT else ("turned off" in message)


# --- Every format ----------------------------------------------------------------------------------------------------

MAKERS = {
    "docx": lambda d: makers.make_docx(d / "a.docx"),
    "pptx": lambda d: makers.make_pptx(d / "a.pptx"),
    "xlsx": lambda d: makers.make_xlsx(d / "a.xlsx"),
    "csv": lambda d: makers.make_csv(d / "a.csv"),
    "eml": lambda d: makers.make_eml(d / "a.eml"),
    "mbox": lambda d: makers.make_mbox(d / "a.mbox"),
    "pdf": lambda d: makers.make_text_pdf(d / "a.pdf", ["Hello from a PDF page."]),
}


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_results_are_picklable_and_typed(tmp_path: Path, kind: str):
    doc = read_document(MAKERS[kind](tmp_path))
    assert doc.doc_type == kind
    assert pickle.loads(pickle.dumps(doc)) == doc
    assert all(s.text.strip() for s in doc.sections)
    assert_markdown_tables_are_whole(doc)


@needs_tesseract
def test_multi_page_tiff_gives_a_section_per_page(tmp_path: Path):
    first, second = makers.text_image(), makers.text_image(["Second page here"])
    first.save(tmp_path / "fax.tiff", save_all=True, append_images=[second])
    doc = read_document(tmp_path / "fax.tiff")
    assert [s.page for s in doc.sections] == [1, 2]
    assert "second page" in doc.sections[1].text.lower()


@needs_tesseract
def test_missing_language_pack_is_ocr_unavailable(tmp_path: Path):
    image = makers.make_image_with_text(tmp_path / "scan.png")
    with pytest.raises(OcrUnavailableError, match="tesseract-ocr-xyz"):
        read_document(image, ReaderOptions(ocr_languages="xyz"))


def test_eml_forwarded_message_is_its_own_section(tmp_path: Path):
    outer = makers.build_message("Fwd: thread", "See below.")
    outer.add_attachment(makers.build_message("Original thread", "The original text is here."))
    (tmp_path / "fwd.eml").write_bytes(outer.as_bytes())
    doc = read_document(tmp_path / "fwd.eml")
    assert "Attachments: Original thread (attached message)" in doc.sections[0].text
    inner = next(s for s in doc.sections if s.text == "The original text is here.")
    assert inner.heading == ["Fwd: thread", "Original thread"]
