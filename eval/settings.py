"""The ``eval`` section of a settings profile, and the whole tree with it.

``rag.settings.Settings`` holds what the engine and the server read; eval/ adds its own section by subclassing it
(``FullSettings``), since rag/ may not import eval/. ``load_settings`` here loads that whole tree, with the same
checks as rag's (an unknown key refused with its path and the nearest name, unknown ``RAG_`` variables). The `rag`
command (``eval.cli``) loads it, so a profile's ``eval:`` section is validated at start-up, whichever subcommand
runs; `rag eval`, its runner and the eval scripts read their section from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from rag import settings as core
from rag.settings import Section, Settings


class ApiPrice(Section):
    input_per_million: float = Field(ge=0, description="Price per million prompt tokens.")
    output_per_million: float = Field(ge=0, description="Price per million completion tokens.")


def _default_api_prices() -> dict[str, ApiPrice]:
    # Vendors' published list prices in USD per million tokens, as of 2025. Examples for comparison only: set
    # eval.api_prices to the prices in your own contract.
    return {
        "gpt-4o-mini (2025 list)": ApiPrice(input_per_million=0.15, output_per_million=0.60),
        "gpt-4o (2025 list)": ApiPrice(input_per_million=2.50, output_per_million=10.00),
        "claude-3.5-haiku (2025 list)": ApiPrice(input_per_million=0.80, output_per_million=4.00),
        "claude-sonnet-4 (2025 list)": ApiPrice(input_per_million=3.00, output_per_million=15.00),
    }


class EvalSettings(Section):
    hardware: str = Field("2-vCPU cloud VM", description="What the evaluated deployment runs on, for the report.")
    price_per_hour: float = Field(
        0.09,
        ge=0,
        description="What that hardware costs per hour (default: a 2-vCPU on-demand VM); the cost per 1,000 "
        "queries is measured compute seconds times this.",
    )
    currency: str = Field("USD", description="Currency of price_per_hour and api_prices.")
    api_prices: dict[str, ApiPrice] = Field(
        default_factory=_default_api_prices,
        description="Per-token API prices shown beside ours, at the same measured token counts.",
    )
    judge_url: str | None = Field(
        None, description="OpenAI-compatible base URL of an LLM judge (e.g. http://127.0.0.1:8000/v1); off if unset."
    )
    judge_model: str | None = Field(None, description="Model name to ask the judge endpoint for.")
    judge_api_key_env: str = Field("RAG_JUDGE_API_KEY", description="Environment variable holding the judge's key.")
    regression_threshold: float = Field(
        0.02, ge=0, description="`rag eval compare`: a score (0..1) that drops by more than this is a regression."
    )
    speed_regression: float = Field(
        0.20, ge=0, description="`rag eval compare`: latency or cost more than this fraction worse is a regression."
    )


class FullSettings(Settings):
    """The whole settings tree: the engine's and the server's sections, and ``eval``."""

    eval: EvalSettings = Field(default_factory=EvalSettings)


def load_settings(config: Path | str | None = None, **overrides: Any) -> FullSettings:
    """``rag.settings.load_settings`` for the whole tree, ``eval`` included."""
    return core.load_settings(config, root=FullSettings, **overrides)


def eval_settings(settings: Settings) -> EvalSettings:
    """The ``eval`` section of ``settings``; its defaults when they were loaded without it (by rag/ alone)."""
    return settings.eval if isinstance(settings, FullSettings) else EvalSettings()
