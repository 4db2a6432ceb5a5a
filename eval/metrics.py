"""Deterministic scores for one evaluated question, and their aggregation.

Every function returns ``nan`` when the score is undefined (no gold source, no reference, no sentence to
judge), never 0: a missing measurement must not read as a failure, and aggregates skip it. Sources are
matched by document id, full path or file name, so a dataset can name gold documents however is handy.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from pathlib import PurePath

NAN = float("nan")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_WORD = re.compile(r"[a-z0-9]+")
_MARKER = re.compile(r"\[(\d+)\]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
STOPWORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this that "
    "these those there here what which who whom whose when where why how do does did can could should would may "
    "might must will shall not no yes you your we our they their he she his her i me my so than then too very "
    "about into over under up down out all any each some such only own same just also more most other".split()
)


# -- matching sources -----------------------------------------------------------------------------------------


def source_keys(source: str, doc_id: str | None = None) -> set[str]:
    """The names a retrieved chunk answers to: its document id, its path and its file name."""
    keys = {source, PurePath(source).name} if source else set()
    if doc_id:
        keys.add(doc_id)
    return keys


def is_gold(source: str, doc_id: str | None, gold: Iterable[str]) -> bool:
    wanted = set(gold) | {PurePath(g).name for g in gold}
    return bool(source_keys(source, doc_id) & wanted)


def gold_label(source: str, doc_id: str | None, gold: Sequence[str]) -> str | None:
    """The gold entry a retrieved chunk matches, or None."""
    keys = source_keys(source, doc_id)
    for entry in gold:
        if entry in keys or PurePath(entry).name in keys:
            return entry
    return None


# -- retrieval --------------------------------------------------------------------------------------------------


def hit_at_k(labels: Sequence[str | None], gold: Sequence[str], k: int) -> float:
    """1 if any of the top-k retrieved chunks comes from a gold source. ``labels[i]`` is the gold entry
    chunk i matches (None: no match), as ``gold_label`` gives."""
    if not gold:
        return NAN
    return 1.0 if any(label is not None for label in labels[:k]) else 0.0


def reciprocal_rank(labels: Sequence[str | None], gold: Sequence[str]) -> float:
    if not gold:
        return NAN
    for rank, label in enumerate(labels, start=1):
        if label is not None:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(labels: Sequence[str | None], gold: Sequence[str], k: int = 10) -> float:
    """Binary relevance at document level: each gold document counts once, at its first retrieved chunk,
    so several chunks of one document cannot push the score past 1."""
    if not gold:
        return NAN
    seen: set[str] = set()
    dcg = 0.0
    for rank, label in enumerate(labels[:k], start=1):
        if label is not None and label not in seen:
            seen.add(label)
            dcg += 1.0 / math.log2(rank + 1)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(set(gold)), k) + 1))
    return dcg / ideal


# -- answer correctness -------------------------------------------------------------------------------------------


def normalize(text: str) -> str:
    """SQuAD-style: lower case, no punctuation (Unicode's too), no articles, single spaces."""
    text = text.lower()
    # ASCII and Unicode punctuation alike (curly quotes, dashes, ellipses)
    text = "".join(ch for ch in text if ch not in string.punctuation and not unicodedata.category(ch).startswith("P"))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(answer: str, reference: str | None) -> float:
    if reference is None:
        return NAN
    return 1.0 if normalize(answer) == normalize(reference) else 0.0


def reference_contained(answer: str, reference: str | None) -> float:
    """1 when the normalised reference appears, on word boundaries, inside the normalised answer: the answer
    states the fact, in a sentence of its own. An empty reference is undefined."""
    if reference is None or not normalize(reference):
        return NAN
    return 1.0 if f" {normalize(reference)} " in f" {normalize(answer)} " else 0.0


def regex_match(answer: str, pattern: str | None) -> float:
    if pattern is None:
        return NAN
    return 1.0 if re.search(pattern, answer, flags=re.IGNORECASE) else 0.0


def token_f1(answer: str, reference: str | None) -> float:
    """Harmonic mean of token precision and recall after ``normalize``; an empty answer scores 0."""
    if reference is None:
        return NAN
    predicted, truth = normalize(answer).split(), normalize(reference).split()
    if not predicted or not truth:
        return 1.0 if predicted == truth else 0.0
    common = sum((Counter(predicted) & Counter(truth)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(truth)
    return 2 * precision * recall / (precision + recall)


# -- grounding and citations ------------------------------------------------------------------------------------


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(_MARKER.sub("", text).strip()) if s.strip()]


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in STOPWORDS}


def groundedness(answer: str, cited_texts: Sequence[str], threshold: float = 0.6) -> float:
    """Share of answer sentences whose content words are at least ``threshold`` covered by the cited chunks.
    No sentence (empty answer): undefined. No citation: every sentence is unsupported."""
    parts = [s for s in sentences(answer) if content_words(s)]
    if not parts:
        return NAN
    support = set().union(*(content_words(t) for t in cited_texts)) if cited_texts else set()
    supported = sum(1 for s in parts if len(content_words(s) & support) / len(content_words(s)) >= threshold)
    return supported / len(parts)


def citation_precision(cited_labels: Sequence[str | None], gold: Sequence[str]) -> float:
    """Share of cited chunks that come from a gold source; undefined without citations or without gold."""
    if not gold or not cited_labels:
        return NAN
    return sum(1 for label in cited_labels if label is not None) / len(cited_labels)


def citation_validity(answer: str, valid: int | Collection[int]) -> float:
    """1 when every ``[n]`` in the answer points to a chunk that exists: one of the first ``valid`` chunks
    given (an int), or one of the ``valid`` indices; undefined when the answer has no marker."""
    markers = [int(m) for m in _MARKER.findall(answer)]
    if not markers:
        return NAN
    allowed = set(range(1, valid + 1)) if isinstance(valid, int) else set(valid)
    return 1.0 if all(m in allowed for m in markers) else 0.0


# -- abstention -------------------------------------------------------------------------------------------------


def abstention(refused: Sequence[bool], answerable: Sequence[bool]) -> dict[str, float]:
    """accuracy: refused exactly when unanswerable; correct_refusal_rate over the unanswerable questions;
    false_refusal_rate over the answerable ones."""
    pairs = list(zip(refused, answerable, strict=True))
    unanswerable = [r for r, a in pairs if not a]
    answerable_refused = [r for r, a in pairs if a]
    return {
        "accuracy": mean([1.0 if r == (not a) else 0.0 for r, a in pairs]),
        "correct_refusal_rate": mean([1.0 if r else 0.0 for r in unanswerable]),
        "false_refusal_rate": mean([1.0 if r else 0.0 for r in answerable_refused]),
    }


# -- aggregation ------------------------------------------------------------------------------------------------


def mean(values: Iterable[float]) -> float:
    """Mean of the defined values; nan when none is defined."""
    defined = [v for v in values if not math.isnan(v)]
    return sum(defined) / len(defined) if defined else NAN


def percentile(values: Iterable[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default) of the defined values, q in 0..100."""
    ordered = sorted(v for v in values if not math.isnan(v))
    if not ordered:
        return NAN
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def cost_per_1000_queries(compute_seconds: float, queries: int, price_per_hour: float) -> float:
    """Hardware cost of 1,000 queries at the measured compute time per query."""
    if queries <= 0:
        return NAN
    return compute_seconds / queries * 1000 / 3600 * price_per_hour


def api_cost_per_1000_queries(
    prompt_tokens: float, completion_tokens: float, input_per_million: float, output_per_million: float
) -> float:
    """What 1,000 queries with these mean token counts would cost at a per-token API price."""
    return 1000 * (prompt_tokens * input_per_million + completion_tokens * output_per_million) / 1_000_000
