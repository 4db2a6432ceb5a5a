"""Aggregate generation throughput of the embedded LLM under concurrency: dynamic batching at work.

Loads the configured engine (default: SmolLM2-135M GGUF on CPU), then for each concurrency C runs C requests at
once, each asking for ``--tokens`` new tokens, ``--rounds`` times, and prints generated tokens per second summed
over all requests (total tokens / wall time), time to first token and the ratio to concurrency 1 measured in the
same process. For reference it also times ``model.generate`` on one request: the single-stream path without the
scheduler.

    python -m eval.bench_batching [--concurrency 1,4,8,16] [--tokens 64] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Sequence

from eval.bench_ingest import quiet_progress_bars

TOPICS = [
    "the water cycle",
    "how a bicycle gear works",
    "why the sky is blue",
    "how bread rises",
    "what a compiler does",
    "how bees make honey",
    "how tides work",
    "what a database index is",
    "how vaccines train the immune system",
    "why leaves change colour",
    "how a refrigerator keeps food cold",
    "what photosynthesis produces",
    "how a lighthouse works",
    "why cats purr",
    "how wind turbines make power",
    "how a library catalogue is organised",
]


def messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Explain {TOPICS[i % len(TOPICS)]} in a long, detailed paragraph."}]


def run_level(engine, concurrency: int, tokens: int) -> dict[str, float]:  # noqa: ANN001
    from rag.generation import GenerationParams

    params = GenerationParams(max_new_tokens=tokens, temperature=0.0)
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(concurrency)

    def one(i: int) -> None:
        barrier.wait()
        started = time.perf_counter()
        generation = engine.stream(messages(i), params)
        first = None
        for _ in generation:
            if first is None:
                first = time.perf_counter() - started
        with lock:
            results.append((generation.completion_tokens, first or 0.0))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    total = sum(n for n, _ in results)
    return {"tokens": total, "wall": wall, "tok_s": total / wall, "ttft": statistics.median(f for _, f in results)}


def generate_alone(engine, tokens: int) -> float:  # noqa: ANN001
    """tokens/s of plain ``model.generate`` on one request (no scheduler), for reference."""
    import torch

    model, _ = engine._require()
    inputs = engine.prompt_ids(messages(0)).to(engine.device)
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    return (out.shape[1] - inputs["input_ids"].shape[1]) / (time.perf_counter() - started)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,4,8,16", help="comma separated levels")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--rounds", type=int, default=2, help="runs per level (the best is kept)")
    parser.add_argument("--max-batch", type=int, default=None, help="llm.max_batch (default: the product's, 8)")
    args = parser.parse_args(argv)
    quiet_progress_bars()

    from rag.container import build_engine
    from rag.settings import load_settings

    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    llm = {"max_batch": args.max_batch or max(levels), "max_queue": max(levels)}
    settings = load_settings(llm=llm)
    engine = build_engine(settings)
    started = time.perf_counter()
    engine.load()
    print(
        f"bench_batching: {engine.model_id} on {engine.device}, loaded in {time.perf_counter() - started:.1f} s; "
        f"max_batch {settings.llm.max_batch}, {args.tokens} new tokens per request, best of {args.rounds}"
    )
    run_level(engine, 1, 8)  # warm-up
    alone = generate_alone(engine, args.tokens)
    print(f"  model.generate, one request, no scheduler: {alone:.1f} tokens/s")
    rows = []
    for level in levels:
        best = max((run_level(engine, level, args.tokens) for _ in range(args.rounds)), key=lambda r: r["tok_s"])
        rows.append((level, best))
    base = rows[0][1]["tok_s"] if rows and rows[0][0] == 1 else None
    print(f"\n  {'concurrency':>11}  {'tokens':>7}  {'wall s':>7}  {'tokens/s':>9}  {'vs 1':>6}  {'median TTFT':>12}")
    for level, r in rows:
        ratio = f"{r['tok_s'] / base:5.2f}x" if base else "   n/a"
        print(
            f"  {level:>11}  {int(r['tokens']):>7}  {r['wall']:>7.1f}  {r['tok_s']:>9.1f}  {ratio:>6}  "
            f"{r['ttft'] * 1000:>9.0f} ms"
        )
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
