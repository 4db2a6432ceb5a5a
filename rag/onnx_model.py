"""What a sentence-transformers folder says about running its model, and running its ONNX graph on CPU.

Shared by the export (``rag.onnx_export``, which probes the graph it wrote) and the embedder
(``rag.onnx_embedding``, which serves it): the same tokenizer, padding and pooling on both sides.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import ConfigError

# Whole sentence-transformers modules this backend reproduces; anything else (Dense, LayerNorm...) needs torch.
_SUPPORTED_MODULES = ("models.Transformer", "models.Pooling", "models.Normalize")
USE_TORCH = "set embedding.backend to torch (RAG_EMBEDDING__BACKEND=torch)"


@dataclass(frozen=True)
class ModelLayout:
    """What the sentence-transformers folder says about running the model."""

    folder: Path
    max_seq_length: int
    pooling: str  # "mean" or "cls"
    normalize: bool
    model_type: str


def read_layout(folder: Path) -> ModelLayout:
    """Read max_seq_length, pooling and normalisation; refuse what this backend cannot reproduce."""
    modules = read_json(folder / "modules.json", default=[])
    pooling_path = "1_Pooling"
    normalize = False
    for module in modules:
        kind = str(module.get("type", ""))
        if not kind.endswith(_SUPPORTED_MODULES):
            raise ConfigError(
                f"the embedding model in {folder} has a {kind} module that the onnx-int8 backend does not run: "
                f"{USE_TORCH}"
            )
        if kind.endswith("models.Pooling"):
            pooling_path = module.get("path") or pooling_path
        if kind.endswith("models.Normalize"):
            normalize = True
    pooling = _pooling_mode(folder / pooling_path / "config.json", has_modules=bool(modules))

    config = read_json(folder / "config.json", default={})
    model_type = str(config.get("model_type", ""))
    max_seq_length = read_json(folder / "sentence_bert_config.json", default={}).get("max_seq_length")
    if not max_seq_length:
        # What sentence-transformers falls back to: the smaller of the model's and the tokenizer's limit.
        limits = [
            config.get("max_position_embeddings"),
            read_json(folder / "tokenizer_config.json", {}).get("model_max_length"),
        ]
        usable = [int(v) for v in limits if isinstance(v, int) and 0 < v < 1_000_000]
        max_seq_length = min(usable) if usable else 512
    return ModelLayout(folder, int(max_seq_length), pooling, normalize, model_type)


def _pooling_mode(config_file: Path, *, has_modules: bool) -> str:
    if not config_file.is_file():
        if has_modules:
            raise ConfigError(f"no pooling config at {config_file}: {USE_TORCH}, or restore the file")
        return "mean"  # a plain transformers folder: sentence-transformers adds mean pooling
    config = read_json(config_file, default={})
    if isinstance(config.get("pooling_mode"), str):
        modes = {config["pooling_mode"]}
    else:
        modes = {
            key.removeprefix("pooling_mode_")
            for key, value in config.items()
            if key.startswith("pooling_mode_") and value is True
        }
    aliases = {"mean_tokens": "mean", "mean": "mean", "cls_token": "cls", "cls": "cls"}
    if len(modes) == 1 and next(iter(modes)) in aliases:
        return aliases[next(iter(modes))]
    described = ", ".join(sorted(modes)) or "none"
    raise ConfigError(
        f"pooling mode {described} in {config_file} is not supported by the onnx-int8 backend (only mean or cls): "
        f"{USE_TORCH}"
    )


def read_json(path: Path, default: Any) -> Any:
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def load_tokenizer(layout: ModelLayout, *, truncate: bool) -> Any:
    from tokenizers import Tokenizer

    file = layout.folder / "tokenizer.json"
    if not file.is_file():
        raise ConfigError(f"no tokenizer.json in {layout.folder} (a fast tokenizer is required): {USE_TORCH}")
    tokenizer = Tokenizer.from_file(str(file))
    # tokenizer.json may carry its own truncation/padding (MiniLM ships a fixed 128); we decide both here.
    tokenizer.no_padding()
    if truncate:
        tokenizer.enable_truncation(max_length=layout.max_seq_length)
    else:
        tokenizer.no_truncation()
    return tokenizer


def pad_token_id(folder: Path) -> int:
    pad = read_json(folder / "config.json", default={}).get("pad_token_id")
    return int(pad) if isinstance(pad, int) else 0


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest sequence: (input_ids, attention_mask), both int64."""
    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


def session_feeds(session: Any, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    available = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {i.name: available[i.name] for i in session.get_inputs()}


def pool(hidden: np.ndarray, mask: np.ndarray, pooling: str) -> np.ndarray:
    """Mean (over real tokens) or CLS pooling, then L2 normalisation; float32 (batch, dim)."""
    if pooling == "cls":
        pooled = hidden[:, 0, :]
    else:
        weights = mask[:, :, None].astype(hidden.dtype)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)


def _thread_count() -> int:
    try:
        import torch

        return int(torch.get_num_threads()) or (os.cpu_count() or 1)
    except ImportError:  # pragma: no cover - torch is a dependency
        return os.cpu_count() or 1


def new_session(path: Path) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = _thread_count()
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
