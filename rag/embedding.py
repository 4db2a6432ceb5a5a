"""Embedding seam and its sentence-transformers implementation."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from rag.errors import ModelNotReadyError
from rag.model_files import find_sentence_transformers_folder, resolve_model_path, weights_sha256
from rag.settings import EmbeddingSettings


class Embedder(Protocol):
    """Turns texts into vectors and counts tokens the way the model does.

    Everything the store, the retriever and the ingest pipeline ask of an embedder is here;
    ``tests/contracts/test_embedder.py`` runs every implementation.
    """

    model_id: str
    # The model's tokenizer.json once loaded, so parse workers count tokens exactly as the model does; None when
    # there is no such file (the pipeline then chunks in its own process, through ``tokenize``).
    tokenizer_file: Path | None

    @property
    def fingerprint(self) -> str:
        """Model, backend and weights hash: vectors from different fingerprints must never be mixed."""
        ...

    def load(self) -> None:
        """The visible warm-up; idempotent."""
        ...

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """L2-normalised vectors (cosine = dot product), one per text, in order."""
        ...

    def embed_query(self, text: str) -> list[float]:
        """A question's vector, with the model's query prefix where it has one."""
        ...

    def tokenize(self, text: str) -> list[int]:
        """The model's token ids, without special tokens and without truncation: for chunk sizes."""
        ...


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SentenceTransformerEmbedder:
    """A local sentence-transformers model; vectors are L2-normalised so cosine = dot product."""

    def __init__(self, settings: EmbeddingSettings) -> None:
        self.settings = settings
        self.model_id = settings.model
        self.model_sha256: str | None = None  # sha256 of the weights (one hash over the weight files)
        self.tokenizer_file: Path | None = None  # lets parse workers count tokens exactly as this model does
        self._model = None
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            from sentence_transformers import SentenceTransformer

            folder = find_sentence_transformers_folder(resolve_model_path(self.settings.model, kind="embedding"))
            model = SentenceTransformer(str(folder), device=resolve_device(self.settings.device), local_files_only=True)
            self.model_sha256 = weights_sha256(folder)
            if (folder / "tokenizer.json").is_file():
                self.tokenizer_file = folder / "tokenizer.json"
            self._model = model

    @property
    def model(self):  # noqa: ANN201 - sentence_transformers type is imported lazily
        if self._model is None:
            raise ModelNotReadyError("the embedding model is not loaded yet: call load() or wait for /readyz")
        return self._model

    @property
    def fingerprint(self) -> str:
        """Names the exact vectors: model, backend and the hash of the weights that produced them."""
        self.model  # noqa: B018 - raises ModelNotReadyError before load()
        assert self.model_sha256 is not None
        return f"{self.model_id}:torch-fp32:{self.model_sha256[:16]}"

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors = self.model.encode(
            list(texts), batch_size=self.settings.batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([self.settings.query_prefix + text])[0]

    def tokenize(self, text: str) -> list[int]:
        # verbose=False: counting a long section before it is split is expected, not worth a warning.
        return self.model.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
