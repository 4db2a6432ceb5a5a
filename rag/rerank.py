"""Optional cross-encoder reranker, from a local sentence-transformers CrossEncoder folder.

Off by default: no reranker weights ship with the product, and nothing is downloaded. When
``retrieval.reranker`` names a folder, the fused candidates (``retrieval.rerank_candidates`` of them, all already
permitted for the caller) are scored against the query; those under ``retrieval.rerank_threshold`` are dropped
and the rest are ordered by that score.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from rag.errors import ConfigError
from rag.model_files import weights_sha256
from rag.schemas import RetrievedChunk


class CrossEncoderReranker:
    """The ``Reranker`` seam (rag.seams) over a sentence-transformers CrossEncoder; loads on first use."""

    def __init__(self, folder: str | Path, threshold: float, device: str = "cpu") -> None:
        self.folder = Path(folder)
        self.threshold = threshold
        self.device = device
        self.model_sha256: str | None = None
        self._model = None
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            if not (self.folder / "config.json").is_file():
                raise ConfigError(
                    f"retrieval.reranker {self.folder} is not a model folder (no config.json): point it at a local "
                    "sentence-transformers CrossEncoder folder, or unset it"
                )
            from sentence_transformers import CrossEncoder

            self.model_sha256 = weights_sha256(self.folder)
            self._model = CrossEncoder(str(self.folder), device=self.device, local_files_only=True)

    def rerank(self, query: str, chunks: Sequence[RetrievedChunk]) -> list[RetrievedChunk]:
        """Chunks scored at or above the threshold, best first, each with its ``rerank`` score."""
        if not chunks:
            return []
        self.load()
        scores = self._model.predict([(query, c.text) for c in chunks], show_progress_bar=False)  # type: ignore[union-attr]
        kept = []
        for chunk, score in zip(chunks, scores, strict=True):
            if float(score) >= self.threshold:
                chunk.rerank = round(float(score), 6)
                kept.append(chunk)
        return sorted(kept, key=lambda c: -(c.rerank or 0.0))
