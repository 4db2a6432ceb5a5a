"""What an answer may show: a draft checked against the passages it cites, the evidence quoted word for word, and
the citations with the unit of each passage that supports the answer. ``rag.answering`` streams; this decides."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rag import verify
from rag.citations import attribute_by_overlap, cited_indices
from rag.evidence import split_units
from rag.prompting import ContextSource, PromptContext
from rag.schemas import Citation
from rag.settings import PromptSettings

SNIPPET_CHARS = 300


@dataclass
class Outcome:
    """What ``settle`` decided to show for a draft, how well the passages support it, and what was repaired."""

    text: str
    found: bool
    citations: list[Citation]
    support: verify.Support | None
    failed: list[str]
    repair: str
    declined: str | None = None


def display_quote(raw: str) -> str:
    """A quote as the answer shows it: table cells joined, list bullets and spacing removed; words unchanged."""
    text = raw.strip()
    if text.startswith("|"):
        text = " ".join(cell.strip() for cell in text.strip("|").split("|") if cell.strip())
    text = re.sub(r"^[-*•]\s+", "", text)
    return " ".join(text.split())


def quote_span(text: str, wanted: str) -> tuple[int, int]:
    """Offsets of ``wanted`` in ``text`` (whitespace-insensitive), else of the whole text."""
    words = wanted.split()
    if words:
        match = re.search(r"\s+".join(re.escape(w) for w in words), text)
        if match:
            return match.start(), match.end()
    stripped = text.strip()
    start = text.find(stripped) if stripped else 0
    return start, start + len(stripped)


def supporting_span(answer: str, text: str, check: verify.Check | None) -> tuple[int | None, int | None]:
    """The unit of ``text`` (sentence, row, item) that supports ``answer`` best: it holds the most of the answer's
    claims, then shares the most words with it. None when the text has no unit."""
    every = split_units(text)
    units = [u for u in every if not u.is_separator]
    if not units:
        return None, None
    claims = check.claims if check is not None else verify.claims(answer)
    words = verify.content_words(answer)

    def strength(unit) -> tuple[int, int]:  # noqa: ANN001
        lead = every[unit.lead] if unit.lead is not None else None
        around = f"{lead.text if lead else ''}\n{unit.text}"
        return (
            sum(1 for c in claims if verify.holds(c, around)),
            len(words & verify.content_words(around)),
        )

    best = max(units, key=strength)
    if strength(best) == (0, 0):
        return None, None
    return best.start, best.end


def settle(question: str, draft: str, context: PromptContext, prompt: PromptSettings) -> Outcome:
    """Check the model's draft against the passages it cites; show it, quote the evidence instead, or decline."""
    refused = not draft or prompt.refusal.lower().rstrip(".") in draft.lower() or verify.is_markup_only(draft)
    if refused and draft and not verify.is_markup_only(draft):
        return Outcome(prompt.refusal, False, [], None, [], "none", "the model found no answer in the passages")
    suffix, attributed = "", "model"
    if not refused and not cited_indices(draft):
        suffix, attributed = attribute_by_overlap(draft, context.sources), "overlap"
        if not suffix:
            best = max(context.sources, key=lambda s: s.score)
            suffix, attributed = f" [{best.index}]", "context"
    by_index = {s.index: s for s in context.sources}
    cited = [by_index[n] for n in cited_indices(draft + suffix) if n in by_index]
    check = verify.check(draft, [s.chunk.text for s in cited], question) if not refused else None
    if check is not None and check.support == "verified":
        citations = citations_of(draft + suffix, context.sources, attributed, check)
        return Outcome(draft + suffix, True, citations, "verified", [], "none")
    support = check.support if check is not None else "unverified"
    failed = [c.text for c in check.failed] if check is not None else []
    if prompt.unsupported == "quote":
        quoted = quote_of(context)
        if quoted is not None:
            text, citation = quoted
            return Outcome(text, True, [citation], support, failed, "quoted")
    return Outcome(prompt.refusal, False, [], support, failed, "refused", "the model's answer was not supported")


def quote_of(context: PromptContext) -> tuple[str, Citation] | None:
    """The best window of the evidence, quoted word for word, as the answer: '"…" [n]'."""
    window = None
    if context.evidence is not None:
        shown = {id(s.chunk): s for s in context.sources}
        window = next((w for w in context.evidence.windows if id(context.evidence.passages[w.passage]) in shown), None)
    if window is not None:
        chunk = context.evidence.passages[window.passage]
        source = next(s for s in context.sources if s.chunk is chunk)
        start, end = window.start, window.end
    else:
        source = max(context.sources, key=lambda s: s.score, default=None)
        if source is None or not source.chunk.text.strip():
            return None
        start, end = quote_span(source.chunk.text, source.best_sentence or source.text)
    raw = source.chunk.text[start:end]
    shown_text = display_quote(raw)
    if not shown_text:
        return None
    citation = citation_of(source, source.index, "quote", start, end)
    return f"The documents say: “{shown_text}” [{source.index}]", citation


def citations_of(
    answer: str, sources: list[ContextSource], attributed: str, check: verify.Check | None = None
) -> list[Citation]:
    by_index = {s.index: s for s in sources}
    citations = []
    for n in cited_indices(answer):
        source = by_index.get(n)
        if source is None:
            continue
        start, end = supporting_span(answer, source.chunk.text, check)
        citations.append(citation_of(source, n, attributed, start, end))
    return citations


def citation_of(source: ContextSource, n: int, attributed: str, start: int | None, end: int | None) -> Citation:
    chunk = source.chunk
    quote = chunk.text[start:end] if start is not None and end is not None else ""
    return Citation(
        index=n,
        chunk_id=chunk.id,
        document_id=str(chunk.metadata.get("doc_id", "")),
        source=chunk.source,
        title=chunk.title,
        page=chunk.page,
        heading=chunk.heading,
        snippet=(quote or source.best_sentence or source.text)[:SNIPPET_CHARS],
        score=round(chunk.score, 4),
        attributed=attributed,
        text=chunk.text,
        quote=quote,
        quote_start=start if quote else None,
        quote_end=end if quote else None,
    )
