"""Claims check: an answer may state no value that the passages it cites do not hold.

A *claim* is a checkable value in the answer: a number (with the unit word after it, if any), a quoted text, an
identifier (``mod_deflate``, ``KeepAliveTimeout``, ``core.editor``, ``--amend``, ``/etc/apache2``, ``SEV1``) or a
proper name in mid-sentence. Each claim must appear in the text of the passages the answer cites, compared after
light normalisation (case, spacing, thousands separators, number words as digits). The answer's support is:

- ``verified``: every claim was found (or the answer states none and its words come from the passages);
- ``partial``: some claims were found, some not;
- ``unverified``: none was found, or the answer's words are mostly not in the passages.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

Support = Literal["verified", "partial", "unverified"]

NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
}
NUMBER_WORDS.update({"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "ninety": "90", "hundred": "100"})
_NUMBER_WORD = re.compile(r"\b(" + "|".join(NUMBER_WORDS) + r")\b", re.IGNORECASE)
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:[.:/]\d+)*(?:\s?%)?")
_UNIT = re.compile(r"\s?([a-z]{1,12})\b", re.IGNORECASE)
_QUOTED = re.compile(r"\"([^\"]{2,80})\"|“([^”]{2,80})”|`([^`]{2,80})`|(?<![a-z])'([^']{2,80})'(?![a-z])")
_IDENTIFIER = re.compile(
    r"(?<![\w/.-])(?:--?[A-Za-z][\w-]*|/[\w.-]+(?:/[\w.-]+)+/?|<[a-z][\w]*>|[a-z_]\w+(?:\.\w{2,})+|"
    r"\w*[a-z][A-Z]\w*|\w*_\w+|[A-Z][A-Z0-9]{1,}\w*|[a-z]+\d+\w*)(?![\w/])"
)
_CAPITALISED = re.compile(r"(?<=[a-z,;] )[A-Z][a-z]{2,}\b(?:\s[A-Z][a-z]+\b)*(?![\w/-]|\.\w)")
_UNIT_WORDS = frozenset(
    "ms s sec second seconds minute minutes min mins hour hours hr hrs day days business week weeks month months "
    "year years b kb mb gb tb k m g byte bytes kilobytes megabytes gigabytes bit bits character characters char "
    "chars percent line lines request requests connection connections time times entries entry level levels "
    "digit digits word words page pages item items process processes thread threads".split()
)
CALENDAR = frozenset(
    "monday tuesday wednesday thursday friday saturday sunday january february march april may june july august "
    "september october november december".split()
)
_MARKUP = re.compile(r"<[^>]{0,200}>|\[\d{1,3}\]|[*_#`|>\[\]()\-=~:]+")


@dataclass(frozen=True)
class Claim:
    text: str  # as written in the answer
    kind: Literal["number", "quote", "identifier", "name"]
    pattern: str  # regex matched against normalised passage text
    loose: str | None = None  # numbers: the number alone, accepted when the unit word is elsewhere in the passage
    unit: str | None = None


@dataclass
class Check:
    support: Support
    claims: list[Claim] = field(default_factory=list)
    failed: list[Claim] = field(default_factory=list)
    word_coverage: float = 1.0


def normalise(text: str) -> str:
    """Lower case, number words as digits, no thousands separators, single spaces."""
    text = _THOUSANDS.sub("", text.lower())
    text = _NUMBER_WORD.sub(lambda m: NUMBER_WORDS[m.group(1).lower()], text)
    return " ".join(text.split())


def _loose(text: str) -> str:
    """A regex for ``text`` that allows any spacing, and optional markup between words."""
    words = normalise(text).split()
    return r"(?<![\w])" + r"[\s*`'\"|]*".join(re.escape(w) for w in words) + r"(?![\w])"


def claims(answer: str, question: str = "") -> list[Claim]:
    """The checkable values stated in ``answer``; names that the question already uses are not claims."""
    text = re.sub(r"\[\d{1,3}\]", " ", answer)
    found: dict[str, Claim] = {}
    asked = normalise(question)
    for match in _QUOTED.finditer(text):
        quoted = next(g for g in match.groups() if g)
        found.setdefault(normalise(quoted), Claim(quoted, "quote", _loose(quoted)))
    for match in _NUMBER.finditer(
        _NUMBER_WORD.sub(lambda m: NUMBER_WORDS[m.group(1).lower()], _THOUSANDS.sub("", text))
    ):
        number = match.group(0).replace(" ", "")
        unit = _UNIT.match(match.string, match.end())
        pattern = r"(?<![\w.])" + re.escape(number.lower()).replace("%", r"\s?%")
        bare = pattern + r"(?![\d])"
        if unit and unit.group(1).lower() in _UNIT_WORDS:
            word = unit.group(1).lower()
            stem = word[:3] if len(word) > 3 else word
            claim = Claim(
                f"{number} {unit.group(1)}", "number", pattern + r"\s?(?:-\s?)?" + re.escape(stem), bare, stem
            )
        else:
            claim = Claim(number, "number", bare)
        found.setdefault(claim.pattern, claim)
    for match in _IDENTIFIER.finditer(text):
        word = match.group(0).rstrip("._")  # "SSL_*" names the SSL_ variables: SSL
        if len(word) < 2 or word.lower() in found or re.fullmatch(r"\d+\w{0,2}", word) or word.lower() in _UNIT_WORDS:
            continue
        if normalise(word) in asked:
            continue
        found.setdefault(word.lower(), Claim(word, "identifier", _loose(word)))
    for match in _CAPITALISED.finditer(text):
        name = match.group(0)
        if normalise(name) in asked or name.lower() in found:
            continue
        found.setdefault(name.lower(), Claim(name, "name", _loose(name)))
    return list(found.values())


def holds(claim: Claim, passage: str) -> bool:
    """The claim is in the passage; a number with a unit also holds when the passage has the number, and the unit
    word elsewhere (a table cell "KeepAliveTimeout 5" under a description that says "seconds")."""
    text = normalise(passage)
    if re.search(claim.pattern, text):
        return True
    return bool(
        claim.loose and claim.unit and re.search(claim.loose, text) and re.search(r"\b" + re.escape(claim.unit), text)
    )


_WORD = re.compile(r"[a-z0-9]+")
_COMMON = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been it its this that these those "
    "there what which who when where how do does can should would may must will not no you your we our they their "
    "so than then also only any all each some such into about per within after before up".split()
)


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(normalise(text)) if w not in _COMMON and len(w) > 1}


def check(answer: str, passages: Iterable[str], question: str = "", min_word_coverage: float = 0.5) -> Check:
    """Check ``answer`` against the text of the passages it cites."""
    texts = [p for p in passages if p and p.strip()]
    joined = "\n".join(texts)
    stated = claims(answer, question)
    failed = [c for c in stated if not holds(c, joined)]
    words = content_words(answer) - content_words(question)
    coverage = len(words & content_words(joined)) / len(words) if words else 1.0
    if not texts:
        support: Support = "unverified"
    elif stated and len(failed) == len(stated):
        support = "unverified"
    elif failed:
        support = "partial"
    elif not stated and coverage < min_word_coverage:
        support = "unverified"
    else:
        support = "verified"
    return Check(support, stated, failed, round(coverage, 3))


def is_markup_only(text: str) -> bool:
    """True when the text holds no word once markup, citation markers and punctuation are removed."""
    return not re.search(r"\w", _MARKUP.sub(" ", text))
