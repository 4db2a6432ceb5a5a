"""Rated answers as a `rag eval` dataset (`rag feedback export`).

One JSONL line per rated question (the newest rating of a question wins), its ``id`` the feedback id, with only
the keys ``eval.dataset`` accepts:

- thumbs up, answered: ``reference_answer`` is the quote of the first cited passage (the exact sentence the
  answer rests on; a later answer that states it is right, and the context check sees whether retrieval still
  finds it), or the answer text without its ``[n]`` markers when no citation has a quote; ``gold_sources`` are
  the cited documents' source paths.
- thumbs up on a declined answer (nothing found): ``answerable: false``, the decline was right.
- thumbs down: the question alone, no reference and no gold sources, preceded by a ``#`` comment line (which
  ``rag eval`` skips) with the rater's comment. An admin fills in ``reference_answer`` (a text the right answer
  contains, or ``{"regex": "..."}``) and ``gold_sources`` (the paths of the documents that hold it), or sets
  ``answerable`` to false when the documents cannot answer it; left as is, the item still scores retrieval-free
  measures such as speed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path

from rag.errors import InvalidRequestError
from rag.storage import PRIVATE_FILE

_MARKER = re.compile(r"\s*\[\d+\]")


def since_iso(value: str | None) -> str | None:
    """``--since`` as the stored times' ISO form (UTC); a clear error for anything that is not a date or time."""
    if value is None:
        return None
    text = value.strip()
    try:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC).isoformat(timespec="microseconds")
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequestError(f"--since {value!r} is not an ISO date or time: write e.g. 2026-06-01") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).isoformat(timespec="microseconds")


def eval_item(feedback: dict) -> dict:
    """One rated answer as an eval dataset item."""
    item: dict = {"id": feedback["id"], "question": feedback["question"]}
    if feedback["rating"] != "up":
        return item
    if not feedback.get("found", True):
        return item | {"answerable": False}
    citations = feedback.get("citations") or []
    quote = next((c["quote"].strip() for c in citations if (c.get("quote") or "").strip()), "")
    reference = quote or _MARKER.sub("", feedback["answer"]).strip()
    sources = list(dict.fromkeys(c["source"] for c in citations if c.get("source")))
    return item | ({"reference_answer": reference} if reference else {}) | {"gold_sources": sources}


def comment_line(feedback: dict) -> str:
    said = json.dumps(feedback.get("comment") or "", ensure_ascii=False)
    return f"# {feedback['id']}: thumbs down, comment {said}; fill in reference_answer and gold_sources\n"


def write_dataset(rows: Iterable[dict], out: Path) -> int:
    """Write the dataset (``rows`` newest first, as ``ConversationStore.feedback`` gives them), owner-readable
    only (it holds questions and answers); the number of items written."""
    seen: set[str] = set()
    lines: list[str] = []
    for row in rows:
        asked = " ".join(row["question"].lower().split())
        if not asked or asked in seen:
            continue
        seen.add(asked)
        if row["rating"] != "up":
            lines.append(comment_line(row))
        lines.append(json.dumps(eval_item(row), ensure_ascii=False) + "\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.writelines(lines)
    return len(seen)
