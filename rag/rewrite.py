"""Multi-turn: a follow-up question becomes a standalone query before retrieval.

"And for admin accounts?" retrieves nothing useful on its own. Given the chat history, it is rewritten:

- ``heuristic`` (default; no model call, suits the small embedded model): when the question leans on the
  conversation (a pronoun such as "it" or "that", an opener such as "and" or "what about", or two content words
  or fewer), the content words of the previous user questions that it lacks are appended.
- ``llm``: the generation model rewrites it (for 7B+ models); an empty or runaway reply falls back to the
  heuristic.
- ``off``: the question as asked.

The query used is returned with the answer (``retrieval_query``), so the rewrite is visible.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rag.generation import GenerationEngine, GenerationParams

_WORD = re.compile(r"[\w'-]+")
_LEANS_ON_CONTEXT = re.compile(
    r"\b(it|its|they|them|their|this|that|these|those|he|she|him|her|there|then|same|above|former|latter)\b", re.I
)
_FOLLOW_UP_OPENER = re.compile(r"^\s*(and|but|also|or|so|what about|how about|what if)\b", re.I)
_STOP = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been do does did can could "
    "should would may might must will shall i me my we our you your it its they them their this that these those "
    "what which who whom when where why how about there then also so any some much many more most not no yes "
    "please tell know need get".split()
)
REWRITE_SYSTEM = (
    "Rewrite the user's last question so that it can be understood without the conversation. "
    "Keep its meaning. Reply with the rewritten question only."
)


def content_words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1]


def needs_context(question: str) -> bool:
    return bool(
        _LEANS_ON_CONTEXT.search(question) or _FOLLOW_UP_OPENER.match(question) or len(content_words(question)) <= 2
    )


def previous_questions(history: Sequence[dict[str, str]], turns: int = 2) -> list[str]:
    return [m.get("content", "") for m in history if m.get("role") == "user" and m.get("content")][-turns:]


def rewrite_heuristic(question: str, history: Sequence[dict[str, str]]) -> str:
    earlier = previous_questions(history)
    if not earlier or not needs_context(question):
        return question
    have = set(content_words(question))
    extra = [w for w in dict.fromkeys(w for q in earlier for w in content_words(q)) if w not in have][:12]
    return f"{question.strip()} ({' '.join(extra)})" if extra else question


def rewrite_llm(engine: GenerationEngine, question: str, history: Sequence[dict[str, str]]) -> str:
    if not previous_questions(history) or not needs_context(question):
        return question
    lines = [
        f"{m['role'].capitalize()}: {m.get('content', '')}"
        for m in history[-6:]
        if m.get("role") in ("user", "assistant")
    ]
    messages = [
        {"role": "system", "content": REWRITE_SYSTEM},
        {"role": "user", "content": "Conversation:\n" + "\n".join(lines) + f"\n\nLast question: {question}"},
    ]
    reply = "".join(engine.stream(messages, GenerationParams(max_new_tokens=48))).strip().splitlines()
    text = reply[0].strip() if reply else ""
    if not text or len(text) > 3 * len(question) + 200:
        return rewrite_heuristic(question, history)
    return text


def standalone_query(
    mode: str, question: str, history: Sequence[dict[str, str]] | None, engine: GenerationEngine | None = None
) -> str:
    if not history or mode == "off":
        return question
    if mode == "llm" and engine is not None:
        return rewrite_llm(engine, question, history)
    return rewrite_heuristic(question, history)
