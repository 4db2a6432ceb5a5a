"""Export a sentence-transformers model once to ONNX, quantise it to int8, and check it against fp32.

The export is cached under ``cache_dir`` as ``embed-<key>-int8.onnx``, where ``<key>`` hashes the source weights, the
onnxruntime version and the export recipe. It is written atomically (temp file, then ``os.replace``) under a file
lock, so concurrent processes export at most once and a crash never leaves half a file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rag import onnx_model
from rag.errors import ConfigError
from rag.model_files import weights_sha256
from rag.onnx_model import USE_TORCH, ModelLayout

log = logging.getLogger(__name__)

# Bump when the export steps change, so old cached files are not reused for a new recipe.
EXPORT_RECIPE = "onnx-int8-v1"
# Model types whose graph onnxruntime's BERT optimizer knows how to fuse (Attention, SkipLayerNormalization, ...).
BERT_FAMILY = frozenset({"bert", "roberta", "xlm-roberta", "camembert", "mpnet", "distilbert", "electra"})
# After exporting, the int8 graph must agree with the fp32 model at least this much on a few probe texts.
_MIN_PROBE_COSINE = 0.95
_PROBE_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Invoices are due within thirty days of receipt; late payments accrue interest at 2% per month.",
    "short",
)


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
            f"{_MIN_PROBE_COSINE}): {USE_TORCH}"
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
    tokenizer = onnx_model.load_tokenizer(layout, truncate=True)
    session = onnx_model.new_session(onnx_file)
    encoded = [e.ids for e in tokenizer.encode_batch(list(_PROBE_TEXTS))]
    ids, mask = onnx_model.pad_batch(encoded, onnx_model.pad_token_id(layout.folder))
    feeds = onnx_model.session_feeds(session, ids, mask)
    ours = onnx_model.pool(session.run(None, feeds)[0], mask, layout.pooling)
    with torch.no_grad():
        hidden = model(**{name: torch.from_numpy(value) for name, value in feeds.items()}).last_hidden_state
    reference = onnx_model.pool(hidden.numpy(), mask, layout.pooling)
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
