"""The keyword leg at scale (issue 16, item 5): ``DocStore.keyword_search`` over a million chunks, per access
selectivity, with the retriever's arguments.

    nice -n 5 python -m eval.bench_keyword_scale --chunks 1000000 --queries 200

Builds (once; cached under ``--data``) a registry of ``eval.scale_corpus`` documents through the product's own
writes (``begin``, ``put_chunks``, ``commit``, as ingest does), then, for a caller seeing everything and for each
selectivity 1/s (token ``group:s{s}``), times the queries: the first (which computes the caller's statistics, and in
a fresh process the arrays of ``rag.keyword_scale``) apart, then p50/p95/max of the rest. ``--compare N`` runs the
first N questions through the exact path too: its times and the top-10 overlap of the two. Also times
``allowed_documents`` per caller. Figures in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from eval.bench_keyword_stats import timed
from eval.scale_corpus import CHUNKS_PER_DOC, SELECTIVITIES, chunk_text, doc_acl, doc_id, queries
from rag.docstore import DocStore

BUILT = "bench_keyword_scale_chunks"  # meta key: how many chunks a finished build holds


def build(path: Path, chunks: int) -> DocStore:
    """The registry of ``chunks`` chunks, written document by document as ingest writes them."""
    store = DocStore(path)
    if store.get_meta(BUILT) == str(chunks):
        return store
    if store.get_meta(BUILT) is not None or store.documents():
        raise SystemExit(f"{path} holds another build: remove it, or pass another --data")
    started = time.perf_counter()
    for d in range(chunks // CHUNKS_PER_DOC):
        name, acl = doc_id(d), doc_acl(d)
        first = d * CHUNKS_PER_DOC
        rows = []
        for i in range(first, first + CHUNKS_PER_DOC):
            text = chunk_text(i)
            rows.append((f"{name}-{i - first}", name, text, text))
        store.begin(name, f"/corpus/{name}.md", acl)
        store.put_chunks(rows)
        store.commit(
            name, path=f"/corpus/{name}.md", title=name, doc_type="md", content_hash=name, size_bytes=1,
            chunk_count=CHUNKS_PER_DOC, acl=acl,
        )  # fmt: skip
        if d and d % 5000 == 0:
            print(f"  {d * CHUNKS_PER_DOC} chunks written, {time.perf_counter() - started:.0f} s", flush=True)
    store.set_meta(BUILT, str(chunks))
    store.truncate_log()
    print(f"built {chunks} chunks in {time.perf_counter() - started:.0f} s")
    return store


def summary(ms: list[float]) -> str:
    return f"p50 {statistics.median(ms):7.2f}  p95 {np.percentile(ms, 95):7.2f}  max {max(ms):7.2f}"


def callers() -> list[tuple[str, set[str]]]:
    return [("all", {"group:all"})] + [(f"1/{s}", {f"group:s{s}"}) for s in SELECTIVITIES]


def agreement(store: DocStore, questions: list[str], top_k: int, tokens: set[str], share: float) -> str:
    """Top-10 overlap of the array path with the exact path (forced by raising the threshold), and the exact
    path's own times: the figures before the array path."""
    fast = [store.keyword_search(q, top_k, tokens, None, share) for q in questions]
    threshold, store.SCALE_FROM = store.SCALE_FROM, 10**12
    try:
        started = time.perf_counter()
        store.keyword_search(questions[0], top_k, tokens, None, share)
        first = (time.perf_counter() - started) * 1000
        exact, ms = [], []
        for question in questions:
            started = time.perf_counter()
            exact.append(store.keyword_search(question, top_k, tokens, None, share))
            ms.append((time.perf_counter() - started) * 1000)
    finally:
        store.SCALE_FROM = threshold
    pairs = list(zip(fast, exact, strict=True))
    shares = [len({c for c, _ in a[:10]} & {c for c, _ in b[:10]}) / len(b[:10]) for a, b in pairs if b]
    overlap = statistics.mean(shares) if shares else 1.0
    same = sum(1 for a, b in pairs if a == b)
    return f"top-10 overlap {overlap:.3f}, identical {same}/{len(pairs)} | exact path first {first:8.1f} {summary(ms)}"


def measure(store: DocStore, questions: list[str], top_k: int, share: float, slowest: int, compare: int) -> None:
    for name, tokens in callers():
        started = time.perf_counter()
        store.keyword_search(questions[0], top_k, tokens, None, share)  # the caller's statistics, computed once
        first = (time.perf_counter() - started) * 1000
        ms = timed(lambda q, t=tokens: store.keyword_search(q, top_k, t, None, share), questions)
        empty = sum(1 for q in questions if not store.keyword_search(q, top_k, tokens, None, share))
        print(f"keyword_search {name:6s} first {first:8.1f} | {summary(ms)} | no result for {empty}/{len(ms)}")
        for spent, question in sorted(zip(ms, questions, strict=True), reverse=True)[:slowest]:
            print(f"    {spent:8.2f} ms  {question}")
        if compare:
            print(f"    vs exact on {compare} questions: {agreement(store, questions[:compare], top_k, tokens, share)}")
    for name, tokens in callers():
        ms = timed(lambda _, t=tokens: store.allowed_documents(t), range(20))
        print(f"allowed_documents {name:6s} {summary(ms)} | {len(store.allowed_documents(tokens))} documents")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--data", type=Path, default=Path("/tmp/kwscale"))
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--common-share", type=float, default=0.02)
    parser.add_argument("--compare", type=int, default=0, help="compare this many questions with the exact path")
    parser.add_argument("--scale-from", type=int, default=None, help="chunks from which the array path is taken")
    parser.add_argument("--slowest", type=int, default=0, help="print this many slowest questions per caller")
    args = parser.parse_args()
    path = args.data / f"registry-{args.chunks}.sqlite3"
    store = build(path, args.chunks)
    size = sum(p.stat().st_size for p in args.data.glob(f"{path.name}*"))
    print(f"{args.chunks} chunks, {size / 2**20:.0f} MiB on disk ({path})")
    questions = queries(args.queries, seed=1, chunks=args.chunks)
    if args.scale_from is not None:
        store.SCALE_FROM = args.scale_from
    measure(store, questions, args.top_k, args.common_share, args.slowest, args.compare)
    store.close()


if __name__ == "__main__":
    main()
