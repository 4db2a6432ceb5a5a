"""A faster CPU embedder: the sentence-transformers model exported once to int8 ONNX (``rag.onnx_export``), run by
onnxruntime."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import ModelNotReadyError
from rag.model_files import find_sentence_transformers_folder, resolve_model_path, sha256_file
from rag.onnx_export import ensure_exported
from rag.onnx_model import (
    ModelLayout,
    load_tokenizer,
    new_session,
    pad_batch,
    pad_token_id,
    pool,
    read_layout,
    session_feeds,
)
from rag.settings import EmbeddingSettings

log = logging.getLogger(__name__)


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
                session = new_session(path)
            except Exception as exc:  # noqa: BLE001 - a damaged cache file is rebuilt once, then errors surface
                log.warning("cached embedding model %s does not load (%s); exporting it again", path, exc)
                path.unlink(missing_ok=True)
                path = ensure_exported(layout, self.cache_dir)
                session = new_session(path)
            self._tokenizer = load_tokenizer(layout, truncate=False)
            self._batch_tokenizer = load_tokenizer(layout, truncate=True)
            self._pad_id = pad_token_id(folder)
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
            ids, mask = pad_batch([encodings[i].ids for i in rows], self._pad_id)
            hidden = session.run(["last_hidden_state"], session_feeds(session, ids, mask))[0]
            pooled = pool(hidden, mask, self.layout.pooling)
            if vectors.shape[1] == 0:
                vectors = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
            vectors[rows] = pooled
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([self.settings.query_prefix + text])[0]

    def tokenize(self, text: str) -> list[int]:
        self.session  # noqa: B018 - raises ModelNotReadyError before load()
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)
