"""Citation markers: keep only [n] that point at a real source, and attribute uncited answers by overlap."""

from __future__ import annotations

import re

from rag.prompting import ContextSource, split_sentences

MARKER = re.compile(r"\[(\d{1,3})\]")
_WORD = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)?")
_STOPWORDS = frozenset(
    "a an and are as at be by can do does for from has have how i in is it its may must of on or our per "
    "that the their there this to was we what when where which who will with within you your answer context "
    "source question".split()
)


class MarkerFilter:
    """Streams text through, dropping [n] markers whose n is not a source number.

    Text after an unclosed '[' is held back until the marker closes or clearly is not one.
    """

    def __init__(self, valid: set[int]) -> None:
        self.valid = valid
        self.pending = ""

    def feed(self, piece: str) -> str:
        self.pending += piece
        out = []
        while self.pending:
            start = self.pending.find("[")
            if start < 0:
                out.append(self.pending)
                self.pending = ""
                break
            out.append(self.pending[:start])
            rest = self.pending[start:]
            match = re.match(r"\[(\d{1,3})\]", rest)
            if match:
                if int(match.group(1)) in self.valid:
                    out.append(match.group(0))
                self.pending = rest[match.end() :]
            elif re.fullmatch(r"\[\d{0,3}", rest):
                self.pending = rest  # may still become a marker
                break
            else:
                out.append("[")
                self.pending = rest[1:]
        return "".join(out)

    def flush(self) -> str:
        rest, self.pending = self.pending, ""
        return rest


def cited_indices(text: str) -> list[int]:
    """Marker numbers in order of first appearance."""
    return list(dict.fromkeys(int(n) for n in MARKER.findall(text)))


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def attribute_by_overlap(answer: str, sources: list[ContextSource], min_shared: int = 2) -> str:
    """Markers to append for an answer the model did not cite: the source sharing most content words.

    Returns the suffix to add (e.g. " [2]"), or "" when no source shares at least ``min_shared`` words.
    """
    found: list[int] = []
    for sentence in split_sentences(answer) or [answer]:
        words = _content_words(sentence)
        best = max(sources, key=lambda s: len(words & _content_words(s.text)), default=None)
        if best is not None and len(words & _content_words(best.text)) >= min_shared:
            found.append(best.index)
    indices = list(dict.fromkeys(found))
    return (" " + "".join(f"[{i}]" for i in indices)) if indices else ""
