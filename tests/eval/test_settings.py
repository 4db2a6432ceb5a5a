"""The ``eval`` section: added to the settings tree by eval/ (rag/ does not know it), yet checked like the others."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from eval.settings import FullSettings, load_settings
from rag.errors import ConfigError
from rag.settings import load_settings as load_core_settings
from tests.conftest import REPO


def test_a_typo_in_the_eval_section_is_refused_with_its_path_and_the_nearest_name(tmp_path: Path):
    profile = tmp_path / "typo.yaml"
    profile.write_text("eval:\n  api_prices:\n    mine: {input_per_milion: 1, output_per_million: 2}\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(profile)
    message = raised.value.message
    assert "eval.api_prices.mine.input_per_milion is not a setting: did you mean " in message
    assert "eval.api_prices.mine.input_per_million?" in message and str(profile) in message


def test_the_eval_section_loads_from_a_profile_and_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    profile = tmp_path / "profile.yaml"
    profile.write_text(
        "eval:\n  hardware: a GPU box\n  api_prices:\n    mine: {input_per_million: 1, output_per_million: 2}\n"
    )
    monkeypatch.setenv("RAG_EVAL__PRICE_PER_HOUR", "1.5")
    monkeypatch.setenv("RAG_EVAL__REGRESION_THRESHOLD", "0.1")
    with pytest.raises(ConfigError, match="did you mean RAG_EVAL__REGRESSION_THRESHOLD"):
        load_settings(profile)
    monkeypatch.delenv("RAG_EVAL__REGRESION_THRESHOLD")
    settings = load_settings(profile, data_dir=tmp_path)
    assert isinstance(settings, FullSettings) and settings.data_dir == tmp_path
    assert settings.eval.hardware == "a GPU box" and settings.eval.price_per_hour == 1.5
    assert settings.eval.api_prices["mine"].output_per_million == 2


def test_the_judge_key_variable_is_not_taken_for_a_setting(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RAG_JUDGE_API_KEY", "secret")  # eval.judge_api_key_env's default
    assert load_settings().eval.judge_api_key_env == "RAG_JUDGE_API_KEY"


def test_the_rag_command_checks_the_eval_section_whatever_the_subcommand(tmp_path: Path):
    profile = tmp_path / "typo.yaml"
    profile.write_text("eval:\n  judge_urll: http://127.0.0.1:9/v1\n")
    command = [sys.executable, "-m", "eval.cli", "--config", str(profile), "--data-dir", str(tmp_path), "docs", "list"]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "eval.judge_urll is not a setting: did you mean eval.judge_url?" in " ".join(run.stderr.split())


def test_rag_alone_loads_the_engine_and_server_sections():
    assert "eval" not in load_core_settings().model_dump()
