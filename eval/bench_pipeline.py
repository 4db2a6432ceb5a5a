"""End-to-end figures on the embedded defaults: ingest rate, answer latency split, generation speed.

Run: ``python -m eval.bench_pipeline [--questions eval/datasets/sample_smoke.jsonl]``. It uses a fresh
temporary data dir, so the numbers include a cold ingest; model load times are printed on their own line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import rag  # noqa: F401  - offline switches first
from rag.container import Container
from rag.settings import load_settings

REPO = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, default=REPO / "ingest" / "sample_corpus")
    parser.add_argument("--questions", type=Path, default=REPO / "eval" / "datasets" / "sample_smoke.jsonl")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp) / "data")
        container = Container.from_settings(settings)
        started = time.perf_counter()
        container.load(llm=False)
        embed_load = time.perf_counter() - started

        service = container.ingest_service()  # the configured ingest settings, as `rag ingest` uses them
        report = service.ingest_paths([args.corpus], acl=["public"])  # answered below without an identity
        chunks = report.chunks_embedded
        print(
            f"ingest: {len(report.files)} files, {chunks} chunks, {report.tokens_embedded} tokens in "
            f"{report.seconds:.2f}s -> {chunks / report.seconds:.1f} chunks/s, "
            f"{report.tokens_embedded / report.seconds:.0f} tokens/s (embedder load {embed_load:.1f}s excluded)"
        )

        started = time.perf_counter()
        container.engine.load()
        cold = time.perf_counter() - started
        warm_container = Container.from_settings(settings)
        started = time.perf_counter()
        warm_container.engine.load()
        warm = time.perf_counter() - started
        print(f"llm load: {cold:.1f}s cold (GGUF dequantise + cache), {warm:.1f}s from the converted cache")

        rows = [json.loads(line) for line in args.questions.read_text().splitlines() if line.strip()]
        retrieval, generation, ttft, total, rates, tokens = [], [], [], [], [], 0
        declined = 0
        for row in rows:
            answer = container.answers.answer(row["question"])
            retrieval.append(answer.timings.retrieval_ms)
            total.append(answer.timings.total_ms)
            if not answer.found:
                declined += 1
                continue
            generation.append(answer.timings.generation_ms)
            ttft.append(answer.timings.time_to_first_token_ms or 0.0)
            tokens += answer.usage.completion_tokens
            if answer.tokens_per_second:
                rates.append(answer.tokens_per_second)
        generated = len(generation)
        print(f"ask: {len(rows)} questions ({generated} generated, {declined} declined before generation)")
        print(f"  retrieval ms   p50 {statistics.median(retrieval):7.1f}  p95 {percentile(retrieval, 0.95):7.1f}")
        if generated:
            print(f"  generation ms  p50 {statistics.median(generation):7.1f}  p95 {percentile(generation, 0.95):7.1f}")
            print(f"  first token ms p50 {statistics.median(ttft):7.1f}  p95 {percentile(ttft, 0.95):7.1f}")
        print(f"  total ms       p50 {statistics.median(total):7.1f}  p95 {percentile(total, 0.95):7.1f}")
        if rates:
            print(
                f"generation: {tokens} tokens, {statistics.median(rates):.1f} tokens/s median per answer "
                f"({tokens / (sum(generation) / 1000):.1f} tokens/s overall incl. prefill)"
            )


if __name__ == "__main__":
    main()
