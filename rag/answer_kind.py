"""What kind of value a question asks for, and whether a passage states one.

"What is the maximum number of named users on a Ledger Core licence?" asks for a maximum. A passage that gives the
licence's price per named user is about the right thing but does not answer: it states no maximum. Quoting it would
look like an answer to a question the documents cannot answer. So when a question asks for one of the kinds below,
the window that answers must state that kind (a limit word, a currency, a rate, a size with its unit, a date, an
address...); when no window near the top does, the assistant declines.

The kinds are deliberately few and literal. Each names a value with a recognisable surface form; open kinds
("who", "why", "how") are not checked because a role, a reason or a procedure has no such form.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_I = re.IGNORECASE
_NUMBER = r"(?:\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|twelve|twenty|fifty|hundred|thousand)\b)"
_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december|"
    "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
)
_DAYS = "monday|tuesday|wednesday|thursday|friday|saturday|sunday"


@dataclass(frozen=True)
class AnswerKind:
    name: str  # as said in a decline: "no passage states the <name> the question asks for"
    asks: re.Pattern[str]  # matched against the question
    states: re.Pattern[str]  # matched against a window (its text and lead)


KINDS: tuple[AnswerKind, ...] = (
    AnswerKind(
        "maximum",
        re.compile(r"\b(maximum|max)\b", _I),
        re.compile(
            r"max|\b(up to|at most|no more than|limit\w*|caps?|capped|ceiling|exceed\w*|largest|highest|most|"
            r"greater than|more than|upper)\b",
            _I,
        ),
    ),
    AnswerKind(
        "minimum",
        re.compile(r"\bminimum\b", _I),
        re.compile(
            r"min|\b(at least|no less than|no fewer than|shortest|smallest|lowest|"
            r"or (later|newer|higher|more|above))\b",
            _I,
        ),
    ),
    AnswerKind(
        "price",
        re.compile(r"\b(cost|costs|price|prices|fee|fees)\b(?! (option|factor|parameter))", _I),
        re.compile(r"[£$€¥]|\b(cost\w*|price\w*|fees?|free|charge\w*|usd|eur|gbp|dollars?|euros?|pounds?)\b", _I),
    ),
    AnswerKind(
        "rate",
        re.compile(r"\bper (second|minute|hour)\b", _I),
        re.compile(
            r"\bper[ -](second|minute|hour|sec|min)\b|/s\b|/sec\b|\b(a|each) (second|minute|hour)\b|\bhourly\b", _I
        ),
    ),
    AnswerKind(
        "size",
        re.compile(r"\bhow many (megabytes|gigabytes|kilobytes|mb|gb|kb)\b|\bhow much (memory|ram|disk)\b", _I),
        re.compile(_NUMBER + r".{0,40}\b(bytes?|[kmgt]i?b|kilobytes?|megabytes?|gigabytes?|terabytes?|[kmg])\b", _I),
    ),
    AnswerKind(
        "date",
        re.compile(r"\b(what|which) (date|day|year)\b|\bwhen was\b", _I),
        re.compile(
            rf"\b(19|20)\d\d\b|\d{{4}}-\d\d-\d\d|\b\d{{1,2}}(st|nd|rd|th)\b|\b({_MONTHS}|{_DAYS})\b|"
            r"\b(first|last|final) (working |business )?day\b",
            _I,
        ),
    ),
    AnswerKind("region", re.compile(r"\b(what|which) (?:[\w-]+ ){0,2}regions?\b", _I), re.compile(r"\bregion", _I)),
    AnswerKind(
        "port",
        re.compile(r"\b(what|which) (?:[\w-]+ ){0,2}port\b|\bport number\b", _I),
        re.compile(r"port", _I),
    ),
    AnswerKind(
        "address",
        re.compile(r"\b(what|which)(?: is| are)? (?:the )?(?:[\w-]+ ){0,3}address(?:es)?\b", _I),
        re.compile(
            r"@|https?://|\b\d{1,3}(\.\d{1,3}){3}\b|\b[a-z0-9-]+\.(com|org|net|io|local|internal|co|uk|de|example)\b",
            _I,
        ),
    ),
)


def asked(question: str) -> tuple[AnswerKind, ...]:
    """The kinds of value the question asks for (often none)."""
    return tuple(kind for kind in KINDS if kind.asks.search(question))


def states(kinds: Sequence[AnswerKind], text: str) -> bool:
    """Does the text state every kind asked for? True when none is asked."""
    return all(kind.states.search(text) for kind in kinds)


def describe(kinds: Sequence[AnswerKind]) -> str:
    return " and ".join(kind.name for kind in kinds)
