"""Build every component from settings, in one place. Constructors are cheap; ``load()`` does the heavy work."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from rag.answering import AnswerService
from rag.embedding import Embedder, SentenceTransformerEmbedder
from rag.generation import GenerationEngine, TransformersEngine
from rag.retrieval import Retriever
from rag.settings import Settings
from rag.store import ChromaStore


def build_embedder(settings: Settings) -> Embedder:
    return SentenceTransformerEmbedder(settings.embedding)


def build_engine(settings: Settings) -> GenerationEngine:
    match settings.llm.mode:
        case "transformers":
            return TransformersEngine(settings.llm, cache_dir=settings.data_dir / "models")
    raise AssertionError(f"unknown llm.mode {settings.llm.mode}")  # pragma: no cover - Literal guards it


def build_store(settings: Settings) -> ChromaStore:
    return ChromaStore(settings.data_dir / "chroma", settings.collection)


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
        self.retriever = Retriever(self.embedder, self.store, self.settings.retrieval.top_k)
        self.answers = AnswerService(self.settings, self.retriever, self.embedder, self.engine)

    @classmethod
    def from_settings(cls, settings: Settings) -> Container:
        return cls(settings, build_embedder(settings), build_engine(settings), build_store(settings))

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def load(self, *, llm: bool = True) -> None:
        """Load models and open the store; records a failure for /readyz instead of hiding it."""
        try:
            self.embedder.load()
            self.store.count()
            if llm:
                self.engine.load()
                self._ready.set()
        except BaseException as exc:
            self.load_error = exc
            raise
