"""A deterministic synthetic corpus for retrieval at scale (issue 16): chunks of documents with ACL tokens, and
questions against them. Text, not vectors: it is built to look like enterprise text to a keyword index.

Documents of ``CHUNKS_PER_DOC`` chunks; each document has a topic that biases its words. Words come from a
vocabulary of about 50,000 types drawn Zipf-like: English function words and common enterprise words first, then a
long tail of made-up words and identifiers (``ERR-4821``, ``mod_proxy``). Access: every document is in
``group:all``, and in ``group:s{s}`` for each selectivity ``s`` whose hash test it passes, so ``group:s1000`` is
inside ``group:s100``, inside ``group:s10``, inside ``group:s2``, and each holds about 1/s of the documents.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

CHUNKS_PER_DOC = 20
SELECTIVITIES = (2, 10, 100, 1000)
VOCABULARY = 50_000
TOPICS = 500
TOPIC_WORDS = 120  # words each topic favours
TOPIC_SHARE = 0.2  # share of a chunk's words drawn from its document's topic

COMMON = (
    "the of and to a in is for on that with be by this are as it from or at not can an will when if which all "
    "must should new each user service system data server request file access policy team report process "
    "configuration error update support customer account network security management project time version "
    "database application review release document page client change backup log storage group role queue"
).split()
_CONSONANTS, _VOWELS = "bdfgklmnprstvz", "aeiou"
_SYLLABLES = [c + v for c in _CONSONANTS for v in _VOWELS]  # 70 of two letters
_PREFIXES = ("ERR", "KB", "INC", "CHG", "SR", "mod", "svc", "cfg")


def doc_id(d: int) -> str:
    return f"doc{d:07d}"


def _hash(d: int) -> int:
    return (d * 2654435761) % 2**32


def doc_acl(d: int) -> list[str]:
    """``group:all`` and ``group:s{s}`` for each s dividing the document's hash: nested groups of ~1/s."""
    h = _hash(d)
    return ["group:all"] + [f"group:s{s}" for s in SELECTIVITIES if h % s == 0]


def _made_up(k: int) -> str:
    """The k-th made-up word: two to four syllables (distinct lengths never collide), every 20th an identifier."""
    if k % 20 == 0:
        prefix = _PREFIXES[(k // 20) % len(_PREFIXES)]
        return f"{prefix}-{k // 20:04d}" if prefix.isupper() else f"{prefix}_{_syllables(k // 20, 2)}"
    n = len(_SYLLABLES)
    if k < n**2:
        return _syllables(k, 2)
    return _syllables(k - n**2, 3) if k < n**2 + n**3 else _syllables(k - n**2 - n**3, 4)


def _syllables(k: int, size: int) -> str:
    n, word = len(_SYLLABLES), []
    k = (k * 7919) % n**size  # 7919 is prime to 70: a bijection that scatters neighbouring ranks
    for _ in range(size):
        k, r = divmod(k, n)
        word.append(_SYLLABLES[r])
    return "".join(word)


@lru_cache(maxsize=1)
def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(words, cumulative Zipf weights, topic words per topic), built once."""
    words = list(COMMON)
    words += [w for w in map(_made_up, range(VOCABULARY)) if w not in COMMON][: VOCABULARY - len(COMMON)]
    weights = 1.0 / np.arange(1, VOCABULARY + 1) ** 1.05
    cdf = np.cumsum(weights / weights.sum())
    rng = np.random.default_rng(12345)
    # Topic words come from the middle of the ranking: specific enough to tell topics apart, common enough to recur.
    topics = rng.integers(300, 30_000, size=(TOPICS, TOPIC_WORDS))
    return np.array(words, dtype=object), cdf, topics


@lru_cache(maxsize=4)
def _document(d: int) -> tuple[str, ...]:
    """The texts of document d's chunks, all drawn at once (one generator per document keeps it fast)."""
    words, cdf, topics = _tables()
    rng = np.random.default_rng(d)
    lengths = rng.integers(60, 121, size=CHUNKS_PER_DOC)
    total = int(lengths.sum())
    picks = np.searchsorted(cdf, rng.random(total)).clip(0, VOCABULARY - 1)
    topical = rng.random(total) < TOPIC_SHARE
    ranks = (rng.random(total) ** 2 * TOPIC_WORDS).astype(np.int64)  # the topic's first words most
    picks[topical] = topics[_hash(d) % TOPICS][ranks[topical]]
    chosen = words[picks]
    bounds = np.cumsum(lengths)[:-1]
    return tuple(" ".join(part) for part in np.split(chosen, bounds))


def chunk_text(i: int) -> str:
    """Chunk i's text: 60-120 words of document ``i // CHUNKS_PER_DOC``."""
    return _document(i // CHUNKS_PER_DOC)[i % CHUNKS_PER_DOC]


OPENINGS = ("how do i", "what is the", "where can i find", "why does", "when should we", "which", "how to")


def queries(count: int, seed: int = 0, chunks: int = 1_000_000) -> list[str]:
    """``count`` questions of 3-8 words. Most take two to five words of one of the first ``chunks`` chunks (so
    they match) after a question opening, mixed with common words; some mix in topic and rare words at random;
    one in twenty has only words that are in no chunk."""
    words, _, topics = _tables()
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(count):
        kind = rng.random()
        opening = OPENINGS[int(rng.integers(len(OPENINGS)))].split()
        if kind < 0.05:
            body = [f"qx{int(rng.integers(10**6))}z" for _ in range(int(rng.integers(2, 5)))]
        elif kind < 0.75:
            text = chunk_text(int(rng.integers(chunks))).split()
            body = [text[j] for j in sorted(rng.choice(len(text), size=int(rng.integers(2, 6)), replace=False))]
        else:
            topic = topics[int(rng.integers(TOPICS))]
            body = [words[int(rng.integers(40, 300))], words[topic[int(rng.integers(10))]]]
            body.append(words[int(rng.integers(5_000, VOCABULARY))])
        words_left = max(3, min(8, len(opening) + len(body))) - len(body)
        found.append(" ".join(opening[: max(words_left, 1)] + body)[:200])
    return found
