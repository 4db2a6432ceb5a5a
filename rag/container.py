"""Build every component from settings, in one place. Constructors are cheap; ``load()`` does the heavy work."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from rag.answering import AnswerService
from rag.embedding import Embedder, SentenceTransformerEmbedder
from rag.generation import GenerationEngine, TransformersEngine
from rag.ivf_index import IvfIndex
from rag.rerank import CrossEncoderReranker
from rag.retrieval import Retriever
from rag.settings import Settings
from rag.store import ChromaStore
from rag.vector_index import ExactIndex

if TYPE_CHECKING:  # the types only: rag/ imports no other package at run time (see ingest_service)
    from ingest.jobs import JobManager
    from ingest.pipeline import IngestService
    from rag.seams import SearchIndex

log = logging.getLogger(__name__)


def model_cache(settings: Settings) -> Path:
    """``cache_dir``, or the data dir's own ``models`` folder when the machine's cache cannot be written (a
    read-only home): derived model files then cost a conversion per data dir again, never a failed start."""
    try:
        settings.cache_dir.mkdir(parents=True, exist_ok=True)
        if os.access(settings.cache_dir, os.W_OK):
            return settings.cache_dir
    except OSError:
        pass
    fallback = settings.data_dir / "models"
    log.warning("the model cache %s cannot be written: using %s (set RAG_CACHE_DIR)", settings.cache_dir, fallback)
    return fallback


def build_embedder(settings: Settings) -> Embedder:
    embedding = settings.embedding
    if embedding.backend == "onnx-int8":
        from rag.embedding import resolve_device

        if resolve_device(embedding.device) != "cuda":
            from rag.onnx_embedding import OnnxInt8Embedder

            return OnnxInt8Embedder(embedding, cache_dir=model_cache(settings))
        import logging

        logging.getLogger(__name__).info(
            "embedding.device %s resolves to CUDA: using the torch backend (onnx-int8 runs on CPU only)",
            embedding.device,
        )
    return SentenceTransformerEmbedder(embedding)


def build_engine(settings: Settings) -> GenerationEngine:
    match settings.llm.mode:
        case "transformers":
            return TransformersEngine(settings.llm, cache_dir=model_cache(settings))
        case "openai":
            from rag.upstream import OpenAIUpstreamEngine

            return OpenAIUpstreamEngine(settings.llm)
    raise AssertionError(f"unknown llm.mode {settings.llm.mode}")  # pragma: no cover - Literal guards it


def build_store(settings: Settings) -> ChromaStore:
    chroma = settings.chroma
    server = (chroma.host, chroma.port) if chroma.mode == "server" else None
    retrieval = settings.retrieval
    new_index: Callable[[], SearchIndex] = ExactIndex
    if retrieval.dense_index == "ivf":  # faiss loads on first training
        new_index = partial(
            IvfIndex,
            min_rows=retrieval.ivf_min_rows,
            exact_below=retrieval.ivf_exact_below,
            nprobe=retrieval.ivf_nprobe,
            codec=retrieval.ivf_codec,
        )
    return ChromaStore(settings.data_dir / "chroma", settings.collection, server=server, new_index=new_index)


def build_ingest_service(
    settings: Settings, *, embedder: Embedder | None = None, store: ChromaStore | None = None
) -> IngestService:
    """The ingest side alone, with the configured chunking and ingest settings: the embedder and the store, no
    generation engine (`rag ingest` and `rag docs delete` need none)."""
    from ingest.pipeline import IngestService  # lazily: rag/ imports no other package when it loads

    return IngestService(
        embedder or build_embedder(settings), store or build_store(settings), settings.chunking, settings.ingest
    )


@dataclass
class Container:
    """The product's components, wired once per process."""

    settings: Settings
    embedder: Embedder
    engine: GenerationEngine
    store: ChromaStore
    retriever: Retriever = field(init=False)
    answers: AnswerService = field(init=False)
    load_error: BaseException | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        retrieval = self.settings.retrieval
        reranker = (
            CrossEncoderReranker(retrieval.reranker, retrieval.rerank_threshold, self.settings.embedding.device)
            if retrieval.reranker
            else None
        )
        self.retriever = Retriever(self.embedder, self.store, retrieval, reranker)
        self.answers = AnswerService(self.settings, self.retriever, self.embedder, self.engine)

    @classmethod
    def from_settings(cls, settings: Settings) -> Container:
        return cls(settings, build_embedder(settings), build_engine(settings), build_store(settings))

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def check_embedder(self) -> None:
        """Queries must be embedded by the embedder that wrote the store's vectors."""
        self.store.check_embedder(self.embedder)

    def ingest_service(self) -> IngestService:
        """The ingest pipeline over this container's embedder and store, with the configured ingest settings."""
        return build_ingest_service(self.settings, embedder=self.embedder, store=self.store)

    def job_manager(self) -> JobManager:
        """The admin API's ingest job queue (server.admin_api), over this container's ingest service."""
        from ingest.jobs import JobManager  # lazily: rag/ imports no other package when it loads

        return JobManager(self)

    def load(self, *, llm: bool = True) -> None:
        """Load models and open the store; records a failure for /readyz instead of hiding it."""
        try:
            self.embedder.load()
            if self.retriever.reranker is not None:
                self.retriever.reranker.load()
            self.store.count()
            self.check_embedder()
            started = time.perf_counter()
            size = self.store.load_index()
            log.info("search index: %d chunks loaded in %.1f s", size, time.perf_counter() - started)
            if llm:
                self.engine.load()
                self._ready.set()
        except BaseException as exc:
            self.load_error = exc
            raise
