"""An optional LLM judge: any OpenAI-compatible chat endpoint (this project's own `rag serve` included).

Off by default: the default scores are deterministic and need no model. The judge gives two verdicts per
answered question, each yes / no, or ``None`` when its reply cannot be read (kept in the report as ``raw``):

- correct: the answer agrees with the reference answer (or, without one, answers the question);
- faithful: every claim in the answer is supported by the cited passages.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

from rag.errors import ConfigError

SYSTEM = (
    "You grade answers from a document assistant. Reply with exactly two lines and nothing else:\n"
    "CORRECT: yes or no\nFAITHFUL: yes or no"
)
_VERDICT = re.compile(r"\b(CORRECT|FAITHFUL)\s*[:=-]\s*(yes|no)\b", re.IGNORECASE)


def judge_prompt(question: str, reference: str | None, answer: str, passages: Sequence[str]) -> str:
    cited = "\n".join(f"[{i}] {text}" for i, text in enumerate(passages, start=1)) or "(no passage cited)"
    wanted = reference if reference else "(none: judge whether the answer answers the question)"
    return (
        f"Question: {question}\nReference answer: {wanted}\nCited passages:\n{cited}\nAnswer to grade: {answer}\n\n"
        "CORRECT means the answer agrees with the reference answer. "
        "FAITHFUL means every claim in the answer is supported by the cited passages."
    )


def parse_verdicts(reply: str) -> dict[str, bool | None]:
    found = {key.lower(): value.lower() == "yes" for key, value in _VERDICT.findall(reply or "")}
    return {"correct": found.get("correct"), "faithful": found.get("faithful")}


class Judge:
    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 120.0) -> None:
        import openai

        if not base_url or not model:
            raise ConfigError("the judge needs both eval.judge_url and eval.judge_model (or --judge-url/--judge-model)")
        self.base_url, self.model = base_url, model
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "unused", timeout=timeout_s, max_retries=1)

    @classmethod
    def from_settings(cls, url: str | None, model: str | None, key_env: str) -> Judge | None:
        if not url and not model:
            return None
        return cls(url or "", model or "", os.environ.get(key_env))

    def describe(self) -> dict[str, Any]:
        return {"url": self.base_url, "model": self.model, "prompt": SYSTEM}

    def grade(self, question: str, reference: str | None, answer: str, passages: Sequence[str]) -> dict[str, Any]:
        """Verdicts for one answer; a failed call is recorded as an error, not raised: one bad reply must not
        end a long evaluation run."""
        try:
            response = self.client.chat.completions.create(
                model=self.model,
                messages=[
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": judge_prompt(question, reference, answer, passages)},
                ],
                temperature=0,
                max_tokens=24,
            )
            reply = response.choices[0].message.content or ""
        except Exception as exc:  # the openai client raises many types; the report shows which
            return {"correct": None, "faithful": None, "raw": "", "error": f"{type(exc).__name__}: {exc}"}
        return {**parse_verdicts(reply), "raw": reply}
