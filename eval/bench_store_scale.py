"""Retrieval at enterprise size through the product itself (issue 16, item 6): ``make bench-scale``.

A store of ``--n`` chunks (default 1,000,000) is built once under ``--data`` through the product's own write path
(``ChromaStore.upsert`` into embedded Chroma, the registry's begin/commit with each document's ACL tokens, the
texts into the keyword index) and the search index is saved as the product saves it. Vectors are synthetic: the
clustered 384-dimension data of ``eval/bench_scale.py`` (20 chunks a document); texts, documents and ACLs come
from ``eval/scale_corpus.py``, where a caller in group ``s<k>`` sees 1/k of the documents.

Then, each in a fresh process so that its figures are its own:

- **restart**: open the store, load the saved index, answer one question: the seconds until ready, and the RSS.
- **queries**: per selectivity, the end-to-end ``Retriever.retrieve`` (query embedding by the real embedder,
  access filter, dense and keyword legs, fusion, texts and metadata; no reranker, whose cost does not grow with
  the store) p50/p95, the dense leg alone, and recall@10 of both against the same pipeline with the dense leg's
  search swapped for the exact scan of the same rows. The query is embedded by the real embedder and its time
  counts, but the search uses a synthetic query vector near the data (the stored vectors are synthetic, so a
  real embedding of the text would be far from all of them). Every returned chunk's document is checked
  against the caller's ACL: ``forbidden`` must be 0.
- **workers** (with ``--workers``): a ``chroma run`` server over the same folder, two worker processes that load
  the index, each's RSS and its private and shared memory (``/proc/<pid>/smaps_rollup``); then this process
  writes 1,000 chunks of a new document, and the second worker times how long until its search finds them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

from eval import scale_corpus as corpus  # noqa: E402
from eval.bench_scale import generate  # noqa: E402
from eval.scale_store import (  # noqa: E402
    BATCH,
    GROUPS,
    IVF_OPTIONS,
    SEED,
    K,
    child,
    chunk_id,
    memory,
    open_store,
    percentiles,
    recall,
)
from eval.scale_workers import run_workers, worker  # noqa: E402


def build(folder: Path, n: int, kind: str, cache: Path) -> dict:
    """The store of ``n`` chunks, written through ``ChromaStore.upsert`` in batches; reused when complete."""
    from rag.schemas import ChunkRecord

    done = folder / "built.json"
    if done.exists():
        info = json.loads(done.read_text())
        if info.get("texts") != _texts_fingerprint():
            info = _rewrite_texts(folder, kind, n, info)
            done.write_text(json.dumps(info))
        return info
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    vectors = np.load(generate(n, SEED, cache) / "x.npy", mmap_mode="r")
    store = open_store(folder, kind)
    store.keeper.save_every = float("inf")  # one save at the end, not one every 30 s of a long build
    store.load_index()  # opened (empty) now, so that each write adds to it as in a running server
    started = time.perf_counter()
    per = corpus.CHUNKS_PER_DOC
    for start in range(0, n, BATCH):
        stop = min(n, start + BATCH)
        docs = range(start // per, (stop + per - 1) // per)
        for d in docs:
            store.docstore.begin(corpus.doc_id(d), f"/bench/{corpus.doc_id(d)}.txt", corpus.doc_acl(d))
        records = [
            ChunkRecord(
                id=chunk_id(i),
                text=(text := corpus.chunk_text(i)),
                embed_text=text,
                metadata={"doc_id": corpus.doc_id(i // per), "chunk_index": i % per, "source": "bench"},
            )
            for i in range(start, stop)
        ]
        store.upsert(records, np.asarray(vectors[start:stop]).tolist())
        for d in docs:
            acl = corpus.doc_acl(d)
            store.docstore.commit(
                corpus.doc_id(d), path=f"/bench/{corpus.doc_id(d)}.txt", title=corpus.doc_id(d), doc_type="text",
                content_hash=str(d), size_bytes=0, chunk_count=per, acl=acl,
            )  # fmt: skip
        if (stop // BATCH) % 20 == 0 or stop == n:
            print(f"  built {stop:,} chunks in {time.perf_counter() - started:.0f} s", flush=True)
    written = time.perf_counter() - started
    saving = time.perf_counter()
    store.save_index()
    info = {"n": n, "kind": kind, "write_s": round(written, 1), "save_s": round(time.perf_counter() - saving, 1)}
    info["texts"] = _texts_fingerprint()
    store.close()
    done.write_text(json.dumps(info))
    return info


def _texts_fingerprint() -> str:
    """Which corpus wrote the texts: a store built with other texts gets them rewritten, not rebuilt."""
    return hashlib.sha256("\n".join(corpus.chunk_text(i) for i in range(100)).encode()).hexdigest()[:12]


def _rewrite_texts(folder: Path, kind: str, n: int, info: dict) -> dict:
    store = open_store(folder, kind)
    started = time.perf_counter()
    for start in range(0, n, BATCH):
        rows = [
            (chunk_id(i), corpus.doc_id(i // corpus.CHUNKS_PER_DOC), corpus.chunk_text(i))
            for i in range(start, min(n, start + BATCH))
        ]
        store.docstore.put_chunks([(cid, doc, text, text) for cid, doc, text in rows])
    store.close()
    print(f"  texts rewritten in {time.perf_counter() - started:.0f} s", flush=True)
    return info | {"texts": _texts_fingerprint()}


class _SyntheticQueryVectors:
    """The real embedder embeds each question (its time counts); the search gets the synthetic vector paired with
    it, since the stored vectors are synthetic."""

    def __init__(self, real, vectors: dict[str, np.ndarray]) -> None:  # noqa: ANN001 - rag.embedding.Embedder
        self.real, self.vectors = real, vectors

    def embed_query(self, text: str) -> list[float]:
        self.real.embed_query(text)
        return self.vectors[text]


def run_queries(folder: Path, kind: str, n: int, cache: Path, count: int) -> dict:
    """The restart and query phases, in this (fresh) process."""
    from rag.acl import Identity
    from rag.container import build_embedder
    from rag.ivf_index import IvfIndex
    from rag.retrieval import Retriever
    from rag.settings import load_settings
    from rag.vector_index import ExactIndex

    settings = load_settings(data_dir=folder)
    embedder = build_embedder(settings)
    embedder.load()
    embedder.embed_query("warm up the embedder before the clock starts")
    before = memory()
    started = time.perf_counter()
    store = open_store(folder, kind)
    texts = corpus.queries(count * len(GROUPS), seed=1, chunks=n)
    qdata = generate(n, SEED, cache)
    qvecs = np.concatenate([np.load(qdata / f"q_{s}.npy") for s in corpus.SELECTIVITIES])
    vectors = {text: qvecs[i % len(qvecs)] for i, text in enumerate(texts)}
    retriever = Retriever(_SyntheticQueryVectors(embedder, vectors), store, settings.retrieval)
    retriever.retrieve(texts[0], K, identity=Identity.of("bench", ["all"]))
    ready = time.perf_counter() - started
    result = {"ready_s": round(ready, 2), "opened_from": store.keeper.opened_from, "chunks": len(store.index)}
    result["ann_trained"] = isinstance(store.index, IvfIndex) and store.index.trained
    result["memory_before"], result["memory_loaded"] = before, memory()
    index = store.index
    per_group = {}
    for g, group in enumerate(GROUPS):
        identity = Identity.of("bench", [group])
        allowed_list = retriever.allowed_documents(identity.tokens(), None)  # the retriever's cached list
        allowed = set(allowed_list)
        asked = texts[g * count : (g + 1) * count]
        e2e, dense, got, got_dense, forbidden = [], [], [], [], 0
        for text in asked:
            t0 = time.perf_counter()
            hits = retriever.retrieve(text, K, identity=identity)
            e2e.append(time.perf_counter() - t0)
            forbidden += sum(str(h.metadata.get("doc_id")) not in allowed for h in hits)
            got.append([h.id for h in hits])
            t0 = time.perf_counter()
            got_dense.append([cid for cid, _ in store.dense_search(vectors[text], K, allowed_list)])
            dense.append(time.perf_counter() - t0)
        index.search = ExactIndex.search.__get__(index)  # the same pipeline, the dense leg exact
        try:
            want = [[h.id for h in retriever.retrieve(text, K, identity=identity)] for text in asked]
            want_dense = [[cid for cid, _ in store.dense_search(vectors[t], K, allowed_list)] for t in asked]
        finally:
            del index.search
        per_group[group] = {
            "documents": len(allowed),
            "e2e": percentiles(e2e),
            "dense": percentiles(dense),
            "recall_e2e": recall(got, want),
            "recall_dense": recall(got_dense, want_dense),
            "forbidden": forbidden,
        }
        print(f"  {group}: {json.dumps(per_group[group])}", flush=True)
    result["groups"] = per_group
    store.close()
    return result


def dense_only(args: argparse.Namespace) -> dict:
    """The dense leg alone at ``--n`` chunks: the product's IvfIndex, filled from the cached vectors (trained once,
    on all of them, as a store is after its save past 4x growth), then filtered searches timed against
    ``eval/bench_scale.py``'s exact ground truth (its own access lists: a fixed permutation of the documents).
    Measured in the process that built it: the save and memory-mapped load are measured at 1M by the store run."""
    from rag.ivf_index import IvfIndex

    data = generate(args.n, SEED, args.vectors)
    vectors = np.load(data / "x.npy", mmap_mode="r")
    index = IvfIndex(**{**IVF_OPTIONS, "min_rows": args.n - 1}, codec=args.codec)
    started = time.perf_counter()
    for start in range(0, args.n, 100_000):
        rows = range(start, min(args.n, start + 100_000))
        docs = [f"d{i // corpus.CHUNKS_PER_DOC}" for i in rows]
        index.add([chunk_id(i) for i in rows], docs, vectors[rows.start : rows.stop])
        if start == 0:
            index.reserve(args.n - len(rows))  # the first rows set the dimensions
    result: dict = {"n": args.n, "codec": args.codec, "build_s": round(time.perf_counter() - started, 1)}
    result |= {"nlist": index.nlist, "nprobe": index.nprobe, "memory": memory()}
    print(f"  built: {json.dumps(result)}", flush=True)
    for nprobe in [int(p) for p in args.nprobes.split(",")] if args.nprobes else [index.nprobe]:
        index.nprobe = nprobe
        for s in corpus.SELECTIVITIES:
            allowed = [f"d{d}" for d in np.load(data / f"docs_{s}.npy")]  # one list per caller, as the retriever's
            queries, truth = np.load(data / f"q_{s}.npy")[: args.queries], np.load(data / f"gt_{s}.npy")
            times, got = [], []
            for q in queries:
                t0 = time.perf_counter()
                hits = index.search(q, K, allowed)
                times.append(time.perf_counter() - t0)
                got.append([cid for cid, _ in hits])
            want = [[chunk_id(int(r)) for r in row if r >= 0] for row in truth[: len(queries)]]
            figures = percentiles(times) | {"recall": recall(got, want), "documents": len(allowed)}
            result[f"nprobe{nprobe}_s{s}"] = figures
            print(f"  nprobe {nprobe}, 1/{s}: {json.dumps(figures)}", flush=True)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--index", choices=["ivf", "exact"], default="ivf")
    parser.add_argument("--data", type=Path, default=Path("/tmp/rag-bench-scale"))
    parser.add_argument("--vectors", type=Path, default=Path("/tmp/bench_scale_cache"), help="bench_scale.py cache")
    parser.add_argument("--queries", type=int, default=100, help="questions per selectivity")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--ivf-min-rows", type=int, help="IvfIndex min_rows (default: the product's)")
    parser.add_argument("--ivf-exact-below", type=int, help="IvfIndex exact_below (default: the product's)")
    parser.add_argument("--ivf-nprobe", type=int, help="IvfIndex nprobe (default: the product's)")
    parser.add_argument("--workers", action="store_true", help="also two workers on a Chroma server, and a delta")
    parser.add_argument("--dense-only", action="store_true", help="the dense leg alone (IvfIndex), no store")
    parser.add_argument("--codec", choices=["flat", "sq8"], default="flat", help="IvfIndex codec (--dense-only)")
    parser.add_argument("--nprobes", help="comma-separated nprobe values to measure in turn (--dense-only)")
    parser.add_argument("--phase", choices=["all", "queries", "worker"], default="all", help=argparse.SUPPRESS)
    parser.add_argument("--server", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    IVF_OPTIONS.update(
        {
            name: value
            for name in ("min_rows", "exact_below", "nprobe")
            if (value := getattr(args, f"ivf_{name}")) is not None
        }
    )
    folder, cache = args.data / f"{args.index}-{args.n}", args.vectors
    if args.phase == "queries":
        print("RESULT " + json.dumps(run_queries(folder, args.index, args.n, cache, args.queries)), flush=True)
        return
    if args.dense_only:
        report = {"dense": dense_only(args)}
        _write(report, args.out)
        return
    if args.phase == "worker":
        host, port = args.server.rsplit(":", 1)
        worker(folder, args.index, (host, int(port)), args.n, cache)
        return
    report = {"build": build(folder, args.n, args.index, cache)}
    print(f"build: {report['build']}", flush=True)
    report["queries"] = child(args, "queries")
    if args.workers:
        report["workers"] = run_workers(args, folder)
    _write(report, args.out)


def _write(report: dict, out: Path | None) -> None:
    text = json.dumps(report, indent=1)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


if __name__ == "__main__":
    main()
