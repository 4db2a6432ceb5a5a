"""HTML to a title and sections with BeautifulSoup: headings h1..h6 become the heading path, tables become Markdown.

html_sections is also used by the e-mail reader for text/html bodies.
"""

from __future__ import annotations

from pathlib import Path

from ingest.document import ParsedDocument, ReaderOptions, Section, decode_text, title_from_filename
from ingest.tables import table_sections
from rag.errors import EmptyDocumentError

SUFFIXES = frozenset({".html", ".htm"})

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


def read(path: Path, options: ReaderOptions | None = None) -> ParsedDocument:
    title, sections = html_sections(decode_text(path.read_bytes(), path))
    if not sections:
        raise EmptyDocumentError(
            f"{path.name}: no text found in the HTML page (only markup, scripts or navigation): "
            "check that the page was saved with its content"
        )
    return ParsedDocument(title or title_from_filename(path), sections, "html")
