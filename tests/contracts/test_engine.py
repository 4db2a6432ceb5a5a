"""The generation seam's contract (``rag.generation.GenerationEngine``), written once and run over every engine: the
local transformers engine and its batching scheduler (a small random Llama, and the real SmolLM2 GGUF), the OpenAI
upstream engine against a real server on loopback, and the fakes the fast tests stand on.

Whatever the HTTP layer and the answer service ask of an engine must hold for each of them, so a fake cannot pass
a test that the real engines would fail, nor the other way round.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rag.container import Container, model_cache
from rag.errors import ServerBusyError
from rag.generation import GenerationEngine, GenerationParams, TransformersEngine
from rag.settings import LLMSettings, load_settings
from rag.store import ChromaStore
from rag.upstream import OpenAIUpstreamEngine
from serving.app import create_app
from tests.fakes import TEST_KEYS, EchoEngine, HashEmbedder, ScriptedEngine, api_key_settings, save_tiny_llm
from tests.serving.server import running

HELLO = [{"role": "user", "content": "hello there"}]
WORDS = [f"w{i}" for i in range(300)]
LONG = [{"role": "user", "content": " ".join(WORDS)}]  # the echo engines would echo every word of it
MAX_TOKENS = 120  # below the upstream server's llm.max_new_tokens
KEY_ENV = "RAG_TEST_CONTRACT_UPSTREAM_KEY"


@dataclass
class EngineCase:
    """How to build one implementation, and what it promises beyond the common contract."""

    build: Callable[[], GenerationEngine]  # a fresh, unloaded engine
    capacity: int | None = None  # requests in flight before check_capacity refuses; None: not bounded here
    shared: GenerationEngine | None = None  # a session's loaded engine: used, never closed, here


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llm(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def echo_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This project's own server on loopback, over the echo engine: an OpenAI-compatible upstream serving
    ``echo:no-rag``."""
    data_dir = tmp_path_factory.mktemp("upstream") / "data"
    settings = load_settings(data_dir=data_dir, server={"api_keys": api_key_settings(), "rate_limit": "100000/minute"})
    container = Container(settings, HashEmbedder(), EchoEngine(), ChromaStore(data_dir / "chroma", "upstream"))
    container.load()
    with pytest.MonkeyPatch.context() as env, running(create_app(container=container)) as url:
        env.setenv(KEY_ENV, TEST_KEYS["alice"][0])
        yield url + "/v1"
    container.store.close()


def _tiny_local(request: pytest.FixtureRequest) -> EngineCase:
    folder = request.getfixturevalue("tiny_llm")
    cache = request.getfixturevalue("tmp_path_factory").mktemp("tiny-cache")
    settings = {"model": str(folder), "device": "cpu", "max_batch": 2, "max_queue": 1}
    return EngineCase(lambda: TransformersEngine(LLMSettings(**settings), cache_dir=cache), capacity=3)


def _smollm2(request: pytest.FixtureRequest) -> EngineCase:
    container = request.getfixturevalue("real_container")
    settings = container.settings
    return EngineCase(lambda: TransformersEngine(settings.llm, model_cache(settings)), shared=container.engine)


def _upstream(request: pytest.FixtureRequest) -> EngineCase:
    url = request.getfixturevalue("echo_upstream")
    upstream = {"url": url, "model": "echo:no-rag", "api_key_env": KEY_ENV}
    settings = {"mode": "openai", "upstream": upstream, "max_batch": 1, "max_queue": 1}
    return EngineCase(lambda: OpenAIUpstreamEngine(LLMSettings(**settings)), capacity=2)


CASES: dict[str, Callable[[pytest.FixtureRequest], EngineCase]] = {
    "echo": lambda request: EngineCase(EchoEngine),
    "scripted": lambda request: EngineCase(lambda: ScriptedEngine(" ".join(WORDS))),
    "transformers-tiny-llama": _tiny_local,
    "openai-upstream": _upstream,
    "transformers-smollm2": _smollm2,
}


@pytest.fixture(
    scope="module",
    params=[
        *(name for name in CASES if name != "transformers-smollm2"),
        pytest.param("transformers-smollm2", marks=pytest.mark.integration),
    ],
)
def case(request: pytest.FixtureRequest) -> EngineCase:
    return CASES[request.param](request)


@pytest.fixture(scope="module")
def engine(case: EngineCase) -> Iterator[GenerationEngine]:
    if case.shared is not None:
        yield case.shared
        return
    engine = case.build()
    engine.load()
    yield engine
    engine.close()


def wait_idle(engine: GenerationEngine, timeout: float = 5.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while (info := engine.load_info())["active"] or info["queued"]:
        assert time.monotonic() < deadline, f"still busy: {info}"
        time.sleep(0.01)
    return info


class TestGenerationEngine:
    def test_it_names_its_model_and_weights(self, engine: GenerationEngine) -> None:
        assert isinstance(engine.model_id, str) and engine.model_id
        sha = engine.model_sha256
        assert sha is None or (len(sha) == 64 and int(sha, 16) >= 0)

    def test_a_loaded_engine_is_healthy_idle_and_has_room(self, engine: GenerationEngine) -> None:
        assert engine.healthy() is True
        info = wait_idle(engine)
        assert set(info) == {"active", "queued", "slots"} and all(isinstance(v, int) for v in info.values())
        assert info["slots"] >= 1
        assert engine.check_capacity() is None

    def test_it_streams_text_and_counts_tokens(self, engine: GenerationEngine) -> None:
        generation = engine.stream(HELLO, GenerationParams(max_new_tokens=12))
        pieces = list(generation)
        assert pieces and all(isinstance(p, str) for p in pieces) and "".join(pieces).strip()
        assert 1 <= generation.completion_tokens <= 12
        assert generation.prompt_tokens >= 0
        assert wait_idle(engine)["active"] == 0  # a finished stream leaves nothing in flight

    def test_greedy_decoding_is_repeatable(self, engine: GenerationEngine) -> None:
        params = GenerationParams(max_new_tokens=12, temperature=0.0)
        assert "".join(engine.stream(HELLO, params)) == "".join(engine.stream(HELLO, params))

    def test_max_new_tokens_bounds_the_answer(self, engine: GenerationEngine) -> None:
        generation = engine.stream(LONG, GenerationParams(max_new_tokens=3))
        "".join(generation)
        assert 1 <= generation.completion_tokens <= 3

    def test_cancel_ends_the_stream_early_and_frees_its_place(self, engine: GenerationEngine) -> None:
        cancel = threading.Event()
        generation = engine.stream(LONG, GenerationParams(max_new_tokens=MAX_TOKENS), cancel)
        pieces = iter(generation)
        assert next(pieces)
        cancel.set()  # the client went away
        list(pieces)
        assert generation.completion_tokens < MAX_TOKENS
        wait_idle(engine)

    def test_a_generation_cancelled_and_dropped_unread_frees_its_place(self, engine: GenerationEngine) -> None:
        """A client that goes away before the first byte: its generation is never read, only dropped."""
        cancel = threading.Event()
        generation = engine.stream(LONG, GenerationParams(max_new_tokens=MAX_TOKENS), cancel)
        cancel.set()
        del generation
        gc.collect()
        wait_idle(engine)

    def test_count_tokens_grows_with_the_text(self, engine: GenerationEngine) -> None:
        short, long = engine.count_tokens("hello there"), engine.count_tokens(" ".join(WORDS))
        assert isinstance(short, int) and 0 < short < long

    def test_a_full_engine_refuses_at_once_and_has_room_again_after(
        self, engine: GenerationEngine, case: EngineCase
    ) -> None:
        if case.capacity is None:
            pytest.skip("no bound to fill here")
        cancel = threading.Event()
        streams = []
        try:
            for _ in range(case.capacity):
                engine.check_capacity()
                streams.append(engine.stream(LONG, GenerationParams(max_new_tokens=MAX_TOKENS), cancel))
            with pytest.raises(ServerBusyError) as refused:
                engine.check_capacity()
            assert refused.value.retry_after
            with pytest.raises(ServerBusyError):
                engine.stream(HELLO, GenerationParams(max_new_tokens=4))
            assert sum(engine.load_info()[k] for k in ("active", "queued")) == case.capacity
        finally:
            cancel.set()
            for stream in streams:
                list(stream)
        wait_idle(engine)
        engine.check_capacity()

    def test_close_is_safe_before_load_and_twice(self, case: EngineCase) -> None:
        engine = case.build()
        engine.close()
        engine.load()
        assert engine.healthy()
        engine.close()
        engine.close()
