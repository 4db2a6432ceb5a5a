"""The evaluation dataset: JSONL, one question per line.

Fields: ``id`` (unique), ``question``, optional ``reference_answer`` (a text, or ``{"regex": "..."}``),
optional ``gold_sources`` (document paths, file names or document ids), ``answerable`` (default true).
Blank lines and lines starting with ``#`` are skipped. Every problem is reported with its line number.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError, field_validator

from rag.errors import InvalidRequestError

DATASETS = Path(__file__).resolve().parent / "datasets"
BUNDLED_EVAL_SET = DATASETS / "sample_eval.jsonl"  # 60 questions over ingest/sample_corpus; `rag eval`'s default


class RegexReference(BaseModel):
    regex: str

    @field_validator("regex")
    @classmethod
    def compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value


class EvalItem(BaseModel):
    model_config = {"extra": "forbid"}

    id: str = Field(min_length=1)
    question: str = Field(min_length=1)
    reference_answer: str | RegexReference | None = None
    gold_sources: list[str] = Field(default_factory=list)
    answerable: bool = True

    @property
    def reference_text(self) -> str | None:
        return self.reference_answer if isinstance(self.reference_answer, str) else None

    @property
    def reference_regex(self) -> str | None:
        return self.reference_answer.regex if isinstance(self.reference_answer, RegexReference) else None


def load_dataset(path: Path) -> list[EvalItem]:
    path = Path(path)
    if not path.is_file():
        raise InvalidRequestError(f"dataset {path} does not exist: pass a JSONL file (see the README's eval section)")
    items: list[EvalItem] = []
    seen: dict[str, int] = {}
    problems: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            item = EvalItem.model_validate(json.loads(line))
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: not valid JSON ({exc.msg})")
            continue
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'line'}: {e['msg']}" for e in exc.errors())
            problems.append(f"line {number}: {detail}")
            continue
        if item.id in seen:
            problems.append(f"line {number}: id {item.id!r} already used on line {seen[item.id]}")
            continue
        seen[item.id] = number
        items.append(item)
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise InvalidRequestError(f"dataset {path.name} has {len(problems)} problem(s): {shown}")
    if not items:
        raise InvalidRequestError(f"dataset {path.name} holds no questions: add one JSON object per line")
    return items
