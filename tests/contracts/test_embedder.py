"""The embedding seam's contract (``rag.embedding.Embedder``), written once and run over every embedder: the real
offline MiniLM through sentence-transformers (torch fp32) and through the int8 ONNX export, and the hash embedder
the fast tests use. What the store, the retriever and the ingest pipeline rely on holds for each of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from rag.embedding import Embedder, SentenceTransformerEmbedder
from rag.settings import EmbeddingSettings, load_settings
from tests.fakes import HashEmbedder

TEXTS = [
    "Refunds are issued within 14 days of the return being received at our warehouse.",
    "The cafeteria serves lunch from noon to 2 pm.",
    "ok",
    "Employees accrue 1.5 days of paid leave per month, up to ten days a year. " * 4,
    "café naïve résumé — déjà vu",
]
LONG = " ".join(f"section {i} of the employee handbook" for i in range(200))  # far past any model's input limit


@dataclass
class EmbedderCase:
    build: Callable[[], Embedder]  # a fresh, unloaded embedder
    # Cosine a vector embedded in a batch keeps with the same text embedded alone: exact, except where dynamic int8
    # quantisation scales activations per batch (batch-mates nudge a vector a little).
    batch_cosine: float = 0.99999


def _onnx_int8(tmp_path_factory: pytest.TempPathFactory) -> EmbedderCase:
    from rag.onnx_embedding import OnnxInt8Embedder

    # The run's model cache (RAG_CACHE_DIR, set by tests/conftest.py): the export is shared with the other tests.
    cache = load_settings(data_dir=tmp_path_factory.mktemp("onnx")).cache_dir
    return EmbedderCase(lambda: OnnxInt8Embedder(EmbeddingSettings(), cache_dir=cache), batch_cosine=0.98)


CASES: dict[str, Callable[[pytest.TempPathFactory], EmbedderCase]] = {
    "hash": lambda _: EmbedderCase(HashEmbedder),
    "torch-fp32": lambda _: EmbedderCase(lambda: SentenceTransformerEmbedder(EmbeddingSettings(backend="torch"))),
    "onnx-int8": _onnx_int8,
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> EmbedderCase:
    return CASES[request.param](tmp_path_factory)


@pytest.fixture(scope="module")
def embedder(case: EmbedderCase) -> Embedder:
    embedder = case.build()
    embedder.load()
    embedder.load()  # idempotent
    return embedder


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


class TestEmbedder:
    def test_vectors_have_one_dimension_and_unit_length(self, embedder: Embedder) -> None:
        vectors = np.array(embedder.embed_documents(TEXTS))
        query = np.array(embedder.embed_query("How long do refunds take?"))
        assert vectors.ndim == 2 and vectors.shape[0] == len(TEXTS) and vectors.shape[1] > 0
        assert query.shape == (vectors.shape[1],)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # cosine = dot product
        assert np.linalg.norm(query) == pytest.approx(1.0, abs=1e-5)
        assert embedder.embed_documents([]) == []

    def test_the_same_text_gives_the_same_vector(self, embedder: Embedder) -> None:
        np.testing.assert_allclose(embedder.embed_documents(TEXTS), embedder.embed_documents(TEXTS), atol=1e-6)
        assert embedder.embed_query("refunds") == pytest.approx(embedder.embed_query("refunds"), abs=1e-6)

    def test_a_batch_gives_each_text_its_own_vector_in_order(self, embedder: Embedder, case: EmbedderCase) -> None:
        batched = np.array(embedder.embed_documents(TEXTS))
        alone = np.array([embedder.embed_documents([text])[0] for text in TEXTS])
        assert cosines(batched, alone).min() >= case.batch_cosine
        assert list((batched @ alone.T).argmax(axis=1)) == list(range(len(TEXTS)))

    def test_a_query_is_closest_to_the_passage_that_answers_it(self, embedder: Embedder) -> None:
        passages = np.array(embedder.embed_documents(TEXTS[:2]))
        scores = passages @ np.array(embedder.embed_query("How many days until refunds are issued?"))
        assert scores[0] > scores[1]

    def test_tokenize_counts_whole_texts_without_special_tokens(self, embedder: Embedder) -> None:
        short, long = embedder.tokenize("refunds within days"), embedder.tokenize(LONG)
        assert short and all(isinstance(i, int) for i in short)
        assert len(long) > 1000  # never truncated: chunk sizes are counted on whole sections
        assert embedder.tokenize("") == []
        assert embedder.tokenize("refunds within days") == short

    def test_the_tokenizer_file_is_there_for_parse_workers_or_none(self, embedder: Embedder) -> None:
        file = embedder.tokenizer_file
        assert file is None or (isinstance(file, Path) and file.is_file())

    def test_the_fingerprint_names_the_model_and_is_stable(self, embedder: Embedder, case: EmbedderCase) -> None:
        fingerprint = embedder.fingerprint
        assert isinstance(fingerprint, str) and fingerprint.startswith(embedder.model_id)
        assert embedder.fingerprint == fingerprint
        again = case.build()
        again.load()
        assert again.fingerprint == fingerprint  # the same weights, another instance (or process): the same vectors
