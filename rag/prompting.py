"""Turn retrieved chunks into the context and chat messages the local model can follow.

Three modes, chosen by ``prompt.context``:

- ``windows`` (default, for small models such as SmolLM2-135M): the best windows of the passages (a sentence, list
  item or table row with the line that gives it meaning, and the unit after it; ``rag.evidence``), per passage in
  text order, without source numbers. Measured on the bundled smoke set, numbered sources made the 135M model
  print "[1]" instead of answering, so citations are attributed after generation.
- ``sentences`` (the old default): the few sentences most similar to the question, alone, best first. On a real
  manual they held the reference answer for only a quarter of the questions.
- ``chunks`` (for 7B+ instruct models): whole chunks, numbered, and the model is asked to cite ``[n]``.

Whatever the mode, the answer is checked against the passages it cites afterwards (``rag.verify``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from rag.embedding import Embedder
from rag.evidence import Evidence, heading_label, select
from rag.schemas import RetrievedChunk
from rag.settings import PromptSettings

SENTENCES_SYSTEM = "Answer in one sentence using words from the text."
WINDOWS_SYSTEM = SENTENCES_SYSTEM
CHUNKS_SYSTEM = (
    "You answer employees' questions using only the numbered sources. Quote the sources. Cite the source "
    "number in square brackets after each fact, like [1]. If the sources do not contain the answer, say so."
)

_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[£€$])|\n+")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_BREAK.split(text) if s and len(s.strip()) > 1]


@dataclass
class ContextSource:
    """One source behind the prompt: the chunk and the text of it the model sees."""

    index: int
    chunk: RetrievedChunk
    text: str
    best_sentence: str = ""
    score: float = 0.0


def label(chunk: RetrievedChunk) -> str:
    parts = [p for p in (chunk.title, chunk.heading) if p]
    if chunk.page:
        parts.append(f"page {chunk.page}")
    return " > ".join(dict.fromkeys(parts))


@dataclass
class PromptContext:
    sources: list[ContextSource]
    sentences: list[str]  # sentences mode: what the model sees, best first
    mode: str
    evidence: Evidence | None = None  # windows mode: every scored window, for quotes and the answerability gate

    @property
    def numbered(self) -> bool:
        return self.mode == "chunks"


def select_context(
    question: str, chunks: list[RetrievedChunk], embedder: Embedder, settings: PromptSettings
) -> PromptContext:
    """Sources numbered 1..n in retrieval order; in sentences mode only those holding a kept sentence."""
    if settings.context in ("windows", "chunks"):
        evidence = select(
            question,
            [c for c in chunks if (c.text or "").strip()],
            embedder,
            max_windows=settings.max_windows,
            lexical_weight=settings.lexical_weight,
            neighbours=settings.window_neighbours,
            kind_depth=settings.answer_kind_depth,
        )
        if settings.context == "chunks":
            sources = [ContextSource(i, c, c.text) for i, c in enumerate(evidence.passages, 1)]
            for w in evidence.windows:  # each passage's best window, for quotes
                source = sources[w.passage]
                if not source.best_sentence:
                    source.best_sentence, source.score = w.text, w.score
            return PromptContext(sources, [], "chunks", evidence)
        sources = []
        for p in sorted(evidence.chosen):
            best = max(evidence.chosen[p], key=lambda w: w.score)
            chunk = evidence.passages[p]
            sources.append(ContextSource(len(sources) + 1, chunk, evidence.text_of(p), best.text, best.score))
        return PromptContext(sources, [s.text for s in sources], "windows", evidence)
    sentences = [(ci, s) for ci, c in enumerate(chunks) for s in split_sentences(c.text)]
    if not sentences:
        return PromptContext([], [], "sentences")
    vectors = np.asarray(embedder.embed_documents([question] + [s for _, s in sentences]))
    scores = vectors[1:] @ vectors[0]
    order = [int(i) for i in np.argsort(-scores)[: settings.max_sentences] if scores[i] >= settings.min_sentence_score]
    kept: dict[int, list[int]] = {}
    for i in order:
        kept.setdefault(sentences[i][0], []).append(i)
    sources = []
    for ci, chunk in enumerate(chunks):
        if ci in kept:
            ids = sorted(kept[ci])
            best = max(ids, key=lambda i: scores[i])
            sources.append(
                ContextSource(
                    len(sources) + 1,
                    chunk,
                    " ".join(sentences[i][1] for i in ids),
                    sentences[best][1],
                    float(scores[best]),
                )
            )
    return PromptContext(sources, [sentences[i][1] for i in order], "sentences")


def build_messages(question: str, context: PromptContext) -> list[dict[str, str]]:
    if context.numbered:
        text = "\n".join(f"[{s.index}] ({label(s.chunk)}) {s.text}" for s in context.sources)
        return [
            {"role": "system", "content": CHUNKS_SYSTEM},
            {"role": "user", "content": f"Sources:\n{text}\n\nQuestion: {question}"},
        ]
    if context.mode == "windows":
        text = "\n".join(
            f"{heading_label(s.chunk).split(' > ')[-1]}: {s.text}" if s.chunk.heading else s.text
            for s in context.sources
        )
        return [
            {"role": "system", "content": WINDOWS_SYSTEM},
            {"role": "user", "content": f"Text: {text}\n\nQuestion: {question}"},
        ]
    return [
        {"role": "system", "content": SENTENCES_SYSTEM},
        {"role": "user", "content": f"Text: {' '.join(context.sentences)}\n\nQuestion: {question}"},
    ]
