"""A faster CPU embedder: the sentence-transformers model exported once to ONNX, quantised to int8, run by onnxruntime.

The export is cached under ``cache_dir`` as ``embed-<key>-int8.onnx``, where ``<key>`` hashes the source weights, the
onnxruntime version and the export recipe. It is written atomically (temp file, then ``os.replace``) under a file
lock, so concurrent processes export at most once and a crash never leaves half a file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import ConfigError, ModelNotReadyError
from rag.model_files import find_sentence_transformers_folder, resolve_model_path, sha256_file, weights_sha256
from rag.settings import EmbeddingSettings

log = logging.getLogger(__name__)

# Bump when the export steps change, so old cached files are not reused for a new recipe.
EXPORT_RECIPE = "onnx-int8-v1"
# Model types whose graph onnxruntime's BERT optimizer knows how to fuse (Attention, SkipLayerNormalization, ...).
BERT_FAMILY = frozenset({"bert", "roberta", "xlm-roberta", "camembert", "mpnet", "distilbert", "electra"})
# Whole sentence-transformers modules this backend reproduces; anything else (Dense, LayerNorm...) needs torch.
_SUPPORTED_MODULES = ("models.Transformer", "models.Pooling", "models.Normalize")
# After exporting, the int8 graph must agree with the fp32 model at least this much on a few probe texts.
_MIN_PROBE_COSINE = 0.95
_PROBE_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Invoices are due within thirty days of receipt; late payments accrue interest at 2% per month.",
    "short",
)
_USE_TORCH = "set embedding.backend to torch (RAG_EMBEDDING__BACKEND=torch)"


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
    modules = _read_json(folder / "modules.json", default=[])
    pooling_path = "1_Pooling"
    normalize = False
    for module in modules:
        kind = str(module.get("type", ""))
        if not kind.endswith(_SUPPORTED_MODULES):
            raise ConfigError(
                f"the embedding model in {folder} has a {kind} module that the onnx-int8 backend does not run: "
                f"{_USE_TORCH}"
            )
        if kind.endswith("models.Pooling"):
            pooling_path = module.get("path") or pooling_path
        if kind.endswith("models.Normalize"):
            normalize = True
    pooling = _pooling_mode(folder / pooling_path / "config.json", has_modules=bool(modules))

    config = _read_json(folder / "config.json", default={})
    model_type = str(config.get("model_type", ""))
    max_seq_length = _read_json(folder / "sentence_bert_config.json", default={}).get("max_seq_length")
    if not max_seq_length:
        # What sentence-transformers falls back to: the smaller of the model's and the tokenizer's limit.
        limits = [
            config.get("max_position_embeddings"),
            _read_json(folder / "tokenizer_config.json", {}).get("model_max_length"),
        ]
        usable = [int(v) for v in limits if isinstance(v, int) and 0 < v < 1_000_000]
        max_seq_length = min(usable) if usable else 512
    return ModelLayout(folder, int(max_seq_length), pooling, normalize, model_type)


def _pooling_mode(config_file: Path, *, has_modules: bool) -> str:
    if not config_file.is_file():
        if has_modules:
            raise ConfigError(f"no pooling config at {config_file}: {_USE_TORCH}, or restore the file")
        return "mean"  # a plain transformers folder: sentence-transformers adds mean pooling
    config = _read_json(config_file, default={})
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
        f"{_USE_TORCH}"
    )


def _read_json(path: Path, default: Any) -> Any:
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def export_key(folder: Path) -> str:
    """First 16 hex digits of a hash over the source weights, the onnxruntime version and the export recipe."""
    import onnxruntime

    source = weights_sha256(folder)
    return hashlib.sha256(f"{source}:{onnxruntime.__version__}:{EXPORT_RECIPE}".encode()).hexdigest()[:16]


def cached_onnx_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / f"embed-{key}-int8.onnx"


def ensure_exported(layout: ModelLayout, cache_dir: Path) -> Path:
    """The cached int8 ONNX file for this model, exporting it first (once, under a file lock) if it is missing."""
    from filelock import FileLock

    target = cached_onnx_path(cache_dir, export_key(layout.folder))
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.with_suffix(".lock"))):
        if target.is_file():  # another process exported it while we waited
            return target
        started = time.perf_counter()
        log.info("exporting the embedding model %s to int8 ONNX (once) at %s", layout.folder, target)
        export_int8_onnx(layout, target)
        log.info("exported the embedding model in %.1f s", time.perf_counter() - started)
    return target


def export_int8_onnx(layout: ModelLayout, target: Path) -> None:
    """torch -> ONNX (opset 17) -> BERT graph fusions -> dynamic int8 quantisation -> ``target``, atomically."""
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    work = Path(tempfile.mkdtemp(prefix=f".{target.stem}-", dir=target.parent))
    try:
        with _quiet_export():
            model = AutoModel.from_pretrained(str(layout.folder), attn_implementation="eager", local_files_only=True)
            model.eval()
            config = model.config
            wrapper = _last_hidden_state_module(model).eval()
            names = wrapper.input_names
            sample = torch.ones((2, 8), dtype=torch.long)
            inputs = tuple(torch.zeros_like(sample) if n == "token_type_ids" else sample for n in names)
            raw = work / "raw.onnx"
            with torch.no_grad():
                torch.onnx.export(
                    wrapper,
                    inputs,
                    str(raw),
                    input_names=list(names),
                    output_names=["last_hidden_state"],
                    dynamic_axes={name: {0: "batch", 1: "sequence"} for name in (*names, "last_hidden_state")},
                    opset_version=17,
                    do_constant_folding=True,
                    dynamo=False,
                )
            # The fused graph is faster; the plain one is the fallback if fusion fails or changes the results.
            candidates = [raw]
            if layout.model_type in BERT_FAMILY:
                optimized = _optimize_bert(raw, work / "optimized.onnx", config)
                candidates = [optimized, raw] if optimized else candidates
        cosines = []
        for index, graph in enumerate(candidates):
            quantized = work / f"int8-{index}.onnx"
            try:
                with _quiet_export():
                    quantize_dynamic(
                        str(graph),
                        str(quantized),
                        weight_type=QuantType.QInt8,
                        per_channel=True,
                        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                    )
            except Exception as exc:  # noqa: BLE001 - the next (plainer) graph may still quantise
                if graph is candidates[-1]:
                    raise
                log.warning("int8 quantisation of the %s graph failed (%s); trying the plain graph", graph.stem, exc)
                continue
            cosines.append(_probe_cosine(layout, model, quantized))
            if cosines[-1] >= _MIN_PROBE_COSINE:
                os.replace(quantized, target)
                return
            log.warning(
                "int8 export of %s from %s drifts from fp32 (cosine %.3f)", layout.folder, graph.name, cosines[-1]
            )
        raise ConfigError(
            f"the int8 ONNX export of {layout.folder} disagrees with the fp32 model (cosine {max(cosines):.3f} < "
            f"{_MIN_PROBE_COSINE}): {_USE_TORCH}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _optimize_bert(source: Path, destination: Path, config: Any) -> Path | None:
    """Fuse attention and layer norms; on any failure keep the plain graph (slower, still correct)."""
    from onnxruntime.transformers.optimizer import optimize_model

    try:
        optimized = optimize_model(
            str(source),
            model_type="bert",
            num_heads=int(config.num_attention_heads),
            hidden_size=int(config.hidden_size),
        )
        optimized.save_model_to_file(str(destination))
    except Exception as exc:  # noqa: BLE001 - an optional speed-up; the unfused graph is a valid fallback
        log.warning("onnxruntime graph fusion failed (%s); quantising the unfused graph", exc)
        return None
    return destination


def _probe_cosine(layout: ModelLayout, model: Any, onnx_file: Path) -> float:
    """The worst cosine between the int8 graph's and the fp32 model's vectors for a few probe texts.

    Guards against an architecture the graph fusions or the quantiser get wrong.
    """
    import torch

    model.eval()
    tokenizer = _load_tokenizer(layout, truncate=True)
    session = _new_session(onnx_file)
    ids, mask = _pad([e.ids for e in tokenizer.encode_batch(list(_PROBE_TEXTS))], _pad_id(layout.folder))
    feeds = _feeds(session, ids, mask)
    ours = _pool(session.run(None, feeds)[0], mask, layout.pooling)
    with torch.no_grad():
        hidden = model(**{name: torch.from_numpy(value) for name, value in feeds.items()}).last_hidden_state
    reference = _pool(hidden.numpy(), mask, layout.pooling)
    return float(np.min(np.sum(ours * reference, axis=1)))


def _last_hidden_state_module(model: Any) -> Any:
    """A torch module taking positional id/mask tensors and returning only last_hidden_state (what ONNX exports)."""
    import inspect

    import torch

    accepted = inspect.signature(model.forward).parameters
    names = ("input_ids", "attention_mask") + (("token_type_ids",) if "token_type_ids" in accepted else ())

    class LastHiddenState(torch.nn.Module):
        input_names = names

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: Any) -> Any:
            return self.model(**dict(zip(names, args, strict=True))).last_hidden_state

    return LastHiddenState()


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence the exporter's tracer/deprecation warnings, the loading bar and onnxruntime's tool chatter."""
    import transformers

    noisy = [logging.getLogger(name) for name in ("onnxruntime", "onnx", "transformers", "torch.onnx")]
    levels = [logger.level for logger in noisy]
    root_filter = _DropToolChatter()
    # The root logger for their direct logging.info calls, its handlers for what their own loggers propagate.
    filtered = [logging.getLogger(), *logging.getLogger().handlers]
    bar_was_enabled = transformers.utils.logging.is_progress_bar_enabled()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            for logger in noisy:
                logger.setLevel(logging.ERROR)
            for target in filtered:
                target.addFilter(root_filter)
            transformers.utils.logging.disable_progress_bar()
            yield
        finally:
            for logger, level in zip(noisy, levels, strict=True):
                logger.setLevel(level)
            for target in filtered:
                target.removeFilter(root_filter)
            if bar_was_enabled:
                transformers.utils.logging.enable_progress_bar()


class _DropToolChatter(logging.Filter):
    """onnxruntime's optimizer and quantisation tools log INFO chatter (some through the root logger): keep errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        from_tools = f"{os.sep}onnxruntime{os.sep}" in record.pathname
        return not from_tools or record.levelno >= logging.ERROR


def _load_tokenizer(layout: ModelLayout, *, truncate: bool) -> Any:
    from tokenizers import Tokenizer

    file = layout.folder / "tokenizer.json"
    if not file.is_file():
        raise ConfigError(f"no tokenizer.json in {layout.folder} (a fast tokenizer is required): {_USE_TORCH}")
    tokenizer = Tokenizer.from_file(str(file))
    # tokenizer.json may carry its own truncation/padding (MiniLM ships a fixed 128); we decide both here.
    tokenizer.no_padding()
    if truncate:
        tokenizer.enable_truncation(max_length=layout.max_seq_length)
    else:
        tokenizer.no_truncation()
    return tokenizer


def _pad_id(folder: Path) -> int:
    pad = _read_json(folder / "config.json", default={}).get("pad_token_id")
    return int(pad) if isinstance(pad, int) else 0


def _pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest sequence: (input_ids, attention_mask), both int64."""
    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


def _feeds(session: Any, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    available = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {i.name: available[i.name] for i in session.get_inputs()}


def _pool(hidden: np.ndarray, mask: np.ndarray, pooling: str) -> np.ndarray:
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


def _new_session(path: Path) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = _thread_count()
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class OnnxInt8Embedder:
    """Same contract as SentenceTransformerEmbedder: L2-normalised vectors, the model's own token counts."""

    def __init__(self, settings: EmbeddingSettings, cache_dir: Path) -> None:
        self.settings = settings
        self.model_id = settings.model
        self.cache_dir = Path(cache_dir)
        self.model_sha256: str | None = None  # sha256 of the cached int8 ONNX file actually run
        self.onnx_path: Path | None = None
        self.layout: ModelLayout | None = None
        self._session: Any = None
        self._tokenizer: Any = None  # no truncation: counts whole sections
        self._batch_tokenizer: Any = None  # truncates at max_seq_length, adds special tokens
        self._pad_id = 0
        self.tokenizer_file: Path | None = None  # lets parse workers count tokens exactly as this model does
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            folder = find_sentence_transformers_folder(resolve_model_path(self.settings.model, kind="embedding"))
            layout = read_layout(folder)
            path = ensure_exported(layout, self.cache_dir)
            try:
                session = _new_session(path)
            except Exception as exc:  # noqa: BLE001 - a damaged cache file is rebuilt once, then errors surface
                log.warning("cached embedding model %s does not load (%s); exporting it again", path, exc)
                path.unlink(missing_ok=True)
                path = ensure_exported(layout, self.cache_dir)
                session = _new_session(path)
            self._tokenizer = _load_tokenizer(layout, truncate=False)
            self._batch_tokenizer = _load_tokenizer(layout, truncate=True)
            self._pad_id = _pad_id(folder)
            self.model_sha256 = sha256_file(path)
            self.onnx_path = path
            self.tokenizer_file = folder / "tokenizer.json"
            self.layout = layout
            self._session = session

    @property
    def session(self) -> Any:
        if self._session is None:
            raise ModelNotReadyError("the embedding model is not loaded yet: call load() or wait for /readyz")
        return self._session

    @property
    def fingerprint(self) -> str:
        """Names the exact vectors: model, backend and the hash of the ONNX file that produced them."""
        self.session  # noqa: B018 - raises ModelNotReadyError before load()
        assert self.model_sha256 is not None
        return f"{self.model_id}:onnx-int8:{self.model_sha256[:16]}"

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        session = self.session
        if not texts:
            return []
        assert self.layout is not None
        encodings = self._batch_tokenizer.encode_batch(list(texts))
        # Longest first, so each batch pads to a similar length and the slowest batch fails early if memory is short.
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
        vectors = np.empty((len(texts), 0), dtype=np.float32)
        size = self.settings.onnx_batch_size
        for start in range(0, len(order), size):
            rows = order[start : start + size]
            ids, mask = _pad([encodings[i].ids for i in rows], self._pad_id)
            hidden = session.run(["last_hidden_state"], _feeds(session, ids, mask))[0]
            pooled = _pool(hidden, mask, self.layout.pooling)
            if vectors.shape[1] == 0:
                vectors = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
            vectors[rows] = pooled
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([self.settings.query_prefix + text])[0]

    def tokenize(self, text: str) -> list[int]:
        self.session  # noqa: B018 - raises ModelNotReadyError before load()
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)
