"""Evidence: the parts of the retrieved passages that the model reads, chosen so that the answer stays in them.

A passage is cut into *units* (sentences, list items, table rows, short lines) with their character offsets.
Each unit is read with its *lead*: the line that gives it meaning when it is not self-contained, such as a term
line above a definition ("work_mem (integer)" above "The default is four megabytes."), the header row of a table,
or the line that introduces a list. A unit, its lead and the passage's heading path make a *window*, and windows
are what gets scored and shown.

Scoring mixes meaning and words: the cosine similarity of the window to the question (the embedder), and the
share of the question's terms, weighted by how rare they are among the candidate windows, that the window holds.
Similarity alone loses the sentence that holds the answer ("The default is 4MB." is not similar to "What is the
default of work_mem?"); with the lead and the terms it is found.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rag import answer_kind, verify
from rag.embedding import Embedder
from rag.schemas import RetrievedChunk

_SENTENCE_END = re.compile(r"[.!?](?=[\"')\]]?\s+[\"'(\[£€$]?[A-Z0-9])")
_LIST_OR_ROW = re.compile(r"\s*(?:[-*•|>#]|\d+[.)]\s)")
_TERM = re.compile(r"[a-z0-9][a-z0-9_.\-/]*", re.IGNORECASE)
LEAD_MAX_CHARS = 100
STOP_TERMS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this that these "
    "those there here what which who whom whose when where why how do does did can could should would may might must "
    "will shall not no yes you your we our they their he she his her i me my so than then too very about into over "
    "under up down out all any each some such only own same just also more most other get got use used using need "
    "much many long one".split()
)


@dataclass
class Unit:
    """A span of a passage's text: ``text[start:end]`` is the exact quote."""

    start: int
    end: int
    text: str
    lead: int | None = None  # index of the unit that introduces this one (term line, table header, list intro)
    opens_block: bool = True  # False for a sentence that continues the paragraph of the unit before it

    @property
    def is_row(self) -> bool:
        return self.text.startswith("|")

    @property
    def is_separator(self) -> bool:
        return self.is_row and set(self.text) <= set("|-: ")


def _line_breaks(text: str) -> list[int]:
    """Offsets of the newlines that end a block: the next line starts a list item, a table row or a new line at
    the margin that is not a continuation in lower case. Indented lines and lower-case starts are soft wraps."""
    breaks = []
    for match in re.finditer(r"\n", text):
        rest = text[match.end() :]
        if not rest.strip():
            continue
        if _LIST_OR_ROW.match(rest) or rest[:1] == "\n":
            breaks.append(match.start())
            continue
        if rest[:1].isspace():
            continue  # an indented continuation (wrapped HTML source)
        previous = text[: match.start()].rstrip()
        if rest[:1].islower() and not previous.endswith((".", ":", "!", "?")):
            continue  # a wrapped sentence in plain text
        if previous.endswith((",", ";")) or re.search(r"\b(?:and|or|the|a|an|to|of|for|in|on|with)$", previous):
            continue  # a sentence wrapped mid-clause (PDF and plain-text line ends)
        breaks.append(match.start())
    return breaks


def split_units(text: str) -> list[Unit]:
    """The passage's units, in order, with offsets into ``text``. Sentences end at ., ! or ? before a capital or a
    digit; lines end where :func:`_line_breaks` says; table rows and list items are units of their own."""
    lines = set(_line_breaks(text))
    cuts = sorted(lines | {m.end() for m in _SENTENCE_END.finditer(text)})
    units: list[Unit] = []
    start = 0
    for cut in [*cuts, len(text)]:
        piece = text[start:cut]
        stripped = piece.strip()
        if len(stripped) > 1:
            offset = start + piece.index(stripped)
            units.append(Unit(offset, offset + len(stripped), stripped, opens_block=start == 0 or start in lines))
        start = cut
    _attach_leads(units)
    return units


def _ends_sentence(text: str) -> bool:
    return text.rstrip().endswith((".", "!", "?"))


def _attach_leads(units: list[Unit]) -> None:
    header: int | None = None
    intro: int | None = None
    for i, unit in enumerate(units):
        if unit.is_row:
            if header is None:
                header = i
            elif not unit.is_separator:
                unit.lead = header
            continue
        header = None
        if unit.text.startswith(("- ", "* ", "• ")):
            unit.lead = intro
            continue
        previous = units[i - 1] if i else None
        if previous is not None and not unit.opens_block:
            unit.lead = previous.lead  # a later sentence of a paragraph shares the paragraph's term line
        elif previous is not None and not previous.is_row:
            short = len(previous.text) <= LEAD_MAX_CHARS and not _ends_sentence(previous.text)
            if short or previous.text.endswith(":"):
                unit.lead = previous.lead if previous.text.startswith(("- ", "* ")) else i - 1
        intro = i if unit.text.endswith(":") or len(unit.text) <= LEAD_MAX_CHARS else intro


@dataclass
class Window:
    """One unit of one passage, with its lead: what is scored and what the model may read."""

    passage: int  # index into the passages
    unit: int  # index into that passage's units
    text: str  # lead + unit, as the model reads it
    start: int  # offsets of the unit itself (the quote) in the passage text
    end: int
    lead_start: int | None = None
    score: float = 0.0
    dense: float = 0.0
    lexical: float = 0.0
    terms: set[str] = field(default_factory=set)


def terms(text: str) -> set[str]:
    """Lower-case content terms, lightly stemmed (plural s), for matching question words in evidence."""
    found = set()
    for word in _TERM.findall(text.lower()):
        word = word.strip(".-/")
        if len(word) < 2 or word in STOP_TERMS:
            continue
        found.add(stem(word))
    return found


def stem(word: str) -> str:
    """A crude suffix strip, enough to meet "acknowledged" with "acknowledge" and "pages" with "page"."""
    if len(word) > 4 and not any(ch.isdigit() for ch in word):
        for suffix in ("ing", "ed", "es", "s"):
            if word.endswith(suffix) and not word.endswith("ss") and len(word) - len(suffix) >= 3:
                word = word[: -len(suffix)]
                break
        word = word[:-1] if word.endswith("e") and len(word) > 4 else word
    return word


def heading_label(chunk: RetrievedChunk) -> str:
    parts = [p for p in (chunk.title, chunk.heading) if p]
    return " > ".join(dict.fromkeys(parts))


MIN_WINDOW_WORDS = 4  # shorter units (a label, "Life assurance", an underline) only ever serve as leads
_QUANTITY_QUESTION = re.compile(
    r"\b(how (?:much|many|long|soon|quickly|often|far|big|large|old)|what (?:time|date|day|percentage|size|amount|"
    r"rate|port|number|value|default)|when\b|by what|until when|maximum|minimum|limit|default)",
    re.IGNORECASE,
)
_QUANTITY = re.compile(r"\d")
# Bonuses, measured on the bundled set and the apache2-doc set together (top-1 window holding the reference; see
# the README's answer-quality section). Each added 2-10 points on the apache set and none cost the bundled one.
QUANTITY_BONUS = 0.2  # a question asking for an amount, a time or a default prefers windows that state a number
KEY_BONUS = 0.2  # a table row whose first cell the question names in full ("Default:", "Module:", "Core response")
PASSAGE_PRIOR = 0.2  # up to this much for the window's passage being retrieved first
NOVELTY_BONUS = 0.1  # the unit names something the question does not (an identifier, a name, a quoted text)
HEADING_BONUS = 0.1  # the passage's heading names an identifier the question asks about ("KeepAlive Directive")


def _wordy(unit: Unit) -> bool:
    if unit.is_row:
        return not unit.is_separator
    return len(re.findall(r"\w+", unit.text)) >= MIN_WINDOW_WORDS


def windows(passages: Sequence[RetrievedChunk]) -> list[Window]:
    found = []
    for p, chunk in enumerate(passages):
        units = split_units(chunk.text or "")
        for u, unit in enumerate(units):
            if not _wordy(unit):
                continue
            lead = units[unit.lead] if unit.lead is not None else None
            text = f"{lead.text}\n{unit.text}" if lead is not None else unit.text
            found.append(Window(p, u, text, unit.start, unit.end, lead.start if lead is not None else None))
    return found


def score_windows(
    question: str, passages: Sequence[RetrievedChunk], found: list[Window], embedder: Embedder, lexical_weight: float
) -> None:
    """Sets each window's dense, lexical and combined score (in place).

    score = (1 - w) x cosine(question, window) + w x (rare question terms held by the window, its lead and its
    passage's heading path) + bonuses: the passage's retrieval rank (PASSAGE_PRIOR), a number when the question asks
    for an amount or a default (QUANTITY_BONUS), and a table row whose first cell names what is asked (KEY_BONUS:
    "Which module provides X?" and the row "| Module: | mod_x |"), a unit that names something the question
    does not (NOVELTY_BONUS: the answer to a factoid question is new to it), and a passage whose heading names an
    identifier of the question (HEADING_BONUS: the directive's own section rather than a mention elsewhere).
    """
    if not found:
        return
    labels = [heading_label(c) for c in passages]
    vectors = np.asarray(embedder.embed_documents([question, *(w.text for w in found)]), dtype=np.float32)
    dense = vectors[1:] @ vectors[0]
    wanted = terms(question)
    counts: Counter[str] = Counter()
    for w in found:
        w.terms = terms(f"{labels[w.passage]}\n{w.text}")
        counts.update(w.terms & wanted)
    n = len(found)
    weight = {t: math.log(1 + n / (1 + counts[t])) for t in wanted}
    total = sum(weight.values()) or 1.0
    wants_quantity = _QUANTITY_QUESTION.search(question) is not None
    named = [c for c in verify.claims(question) if c.kind == "identifier"]
    titled = {i for i, c in enumerate(passages) if any(verify.holds(n, c.heading or "") for n in named)}
    ranks = [c.fused if c.fused is not None else c.score for c in passages]
    top, bottom = (max(ranks), min(ranks)) if ranks else (0.0, 0.0)
    for w, d in zip(found, dense, strict=True):
        unit = passages[w.passage].text[w.start : w.end]
        w.dense = float(d)
        w.lexical = sum(weight[t] for t in wanted & w.terms) / total
        w.score = (1 - lexical_weight) * w.dense + lexical_weight * w.lexical
        if top > bottom:
            w.score += PASSAGE_PRIOR * (ranks[w.passage] - bottom) / (top - bottom)
        if wants_quantity and _QUANTITY.search(unit):
            w.score += QUANTITY_BONUS
        label = terms(unit.strip("|").split("|")[0]) if unit.startswith("|") else set()
        if label and label <= wanted:
            w.score += KEY_BONUS
        if any(c.kind != "number" for c in verify.claims(unit, question)):
            w.score += NOVELTY_BONUS
        if w.passage in titled:
            w.score += HEADING_BONUS


@dataclass
class Evidence:
    """What the model reads: for each passage kept, the chosen windows in passage order."""

    passages: list[RetrievedChunk]
    windows: list[Window]  # every scored window, best first
    chosen: dict[int, list[Window]]  # passage index -> chosen windows in text order
    kinds: tuple[answer_kind.AnswerKind, ...] = ()  # what the question asks for: a maximum, a date...
    kind_stated: bool = True  # False when a kind is asked and no window near the top states it

    def text_of(self, passage: int) -> str:
        """The model's view of one passage: chosen units with their leads, '…' where text was left out."""
        chunk = self.passages[passage]
        parts: list[str] = []
        last_end = None
        for w in self.chosen.get(passage, []):
            begin = (
                w.lead_start if w.lead_start is not None and (last_end is None or w.lead_start >= last_end) else w.start
            )
            if last_end is not None and begin < last_end:
                begin = last_end
            if last_end is not None and chunk.text[last_end:begin].strip():
                parts.append("…")
            parts.append(" ".join(chunk.text[begin : w.end].split()))
            last_end = max(w.end, last_end or 0)
        return " ".join(p for p in parts if p)

    @property
    def best(self) -> Window | None:
        return self.windows[0] if self.windows else None


def select(
    question: str,
    passages: Sequence[RetrievedChunk],
    embedder: Embedder,
    *,
    max_windows: int,
    lexical_weight: float,
    neighbours: int = 1,
    kind_depth: int = 0,
) -> Evidence:
    """Score every window of the passages and keep the ``max_windows`` best, each with ``neighbours`` units of
    context after it (a definition's next sentence, the row after a header). When the question asks for a kind of
    value (``rag.answer_kind``), the best of the first ``kind_depth`` windows that states it goes first."""
    passages = list(passages)
    found = windows(passages)
    score_windows(question, passages, found, embedder, lexical_weight)
    ranked = sorted(found, key=lambda w: -w.score)
    kinds = answer_kind.asked(question) if kind_depth else ()
    stated = True
    if kinds:
        first = next((i for i, w in enumerate(ranked[:kind_depth]) if answer_kind.states(kinds, w.text)), None)
        stated = first is not None
        if first:
            ranked.insert(0, ranked.pop(first))
    by_key = {(w.passage, w.unit): w for w in found}
    chosen: dict[int, dict[int, Window]] = {}
    for w in ranked[:max_windows]:
        for step in range(neighbours + 1):
            neighbour = by_key.get((w.passage, w.unit + step))
            if neighbour is not None:
                chosen.setdefault(w.passage, {})[neighbour.unit] = neighbour
    ordered = {p: [units[u] for u in sorted(units)] for p, units in chosen.items()}
    return Evidence(passages, ranked, ordered, kinds, stated)
