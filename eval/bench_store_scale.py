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
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

from eval import scale_corpus as corpus  # noqa: E402
from eval.bench_scale import generate  # noqa: E402

COLLECTION = "scale"
BATCH = 5000
K = 10
SEED = 16  # the seed of eval/bench_scale.py's cached runs
GROUPS = [*(f"s{s}" for s in corpus.SELECTIVITIES), "all"]


IVF_OPTIONS: dict[str, int] = {}  # IvfIndex keyword arguments (the small CI run lowers its thresholds)


def _store(folder: Path, kind: str, server: tuple[str, int] | None = None):  # noqa: ANN202 - rag types
    from functools import partial

    from rag.ivf_index import IvfIndex
    from rag.store import ChromaStore
    from rag.vector_index import ExactIndex

    new_index = partial(IvfIndex, **IVF_OPTIONS) if kind == "ivf" else ExactIndex
    return ChromaStore(folder / "chroma", COLLECTION, server=server, new_index=new_index)


def _chunk_id(i: int) -> str:
    return f"c{i:08d}"


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
    store = _store(folder, kind)
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
                id=_chunk_id(i),
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
    store = _store(folder, kind)
    started = time.perf_counter()
    for start in range(0, n, BATCH):
        rows = [
            (_chunk_id(i), corpus.doc_id(i // corpus.CHUNKS_PER_DOC), corpus.chunk_text(i))
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


def _memory() -> dict[str, float]:
    """This process's RSS and its private and shared resident memory, in MB (smaps_rollup)."""
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0]) / 1024
    private = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return {"rss_mb": round(fields["Rss"]), "private_mb": round(private), "pss_mb": round(fields["Pss"])}


def _percentiles(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values) * 1000
    return {"p50_ms": round(float(np.percentile(arr, 50)), 1), "p95_ms": round(float(np.percentile(arr, 95)), 1)}


def _recall(got: list[list[str]], want: list[list[str]]) -> float:
    """Mean recall@10 of each result list against the exact pipeline's."""
    shares = [len(set(a[:K]) & set(b[:K])) / max(1, min(K, len(b))) for a, b in zip(got, want, strict=True)]
    return round(float(np.mean(shares)), 4)


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
    before = _memory()
    started = time.perf_counter()
    store = _store(folder, kind)
    texts = corpus.queries(count * len(GROUPS), seed=1, chunks=n)
    qdata = generate(n, SEED, cache)
    qvecs = np.concatenate([np.load(qdata / f"q_{s}.npy") for s in corpus.SELECTIVITIES])
    vectors = {text: qvecs[i % len(qvecs)] for i, text in enumerate(texts)}
    retriever = Retriever(_SyntheticQueryVectors(embedder, vectors), store, settings.retrieval)
    retriever.retrieve(texts[0], K, identity=Identity.of("bench", ["all"]))
    ready = time.perf_counter() - started
    result = {"ready_s": round(ready, 2), "opened_from": store.keeper.opened_from, "chunks": len(store.index)}
    result["ann_trained"] = isinstance(store.index, IvfIndex) and store.index.trained
    result["memory_before"], result["memory_loaded"] = before, _memory()
    index = store.index
    per_group = {}
    for g, group in enumerate(GROUPS):
        identity = Identity.of("bench", [group])
        allowed = set(store.allowed_documents(identity.tokens()))
        asked = texts[g * count : (g + 1) * count]
        e2e, dense, got, got_dense, forbidden = [], [], [], [], 0
        for text in asked:
            t0 = time.perf_counter()
            hits = retriever.retrieve(text, K, identity=identity)
            e2e.append(time.perf_counter() - t0)
            forbidden += sum(str(h.metadata.get("doc_id")) not in allowed for h in hits)
            got.append([h.id for h in hits])
            t0 = time.perf_counter()
            got_dense.append([cid for cid, _ in store.dense_search(vectors[text], K, sorted(allowed))])
            dense.append(time.perf_counter() - t0)
        index.search = ExactIndex.search.__get__(index)  # the same pipeline, the dense leg exact
        try:
            want = [[h.id for h in retriever.retrieve(text, K, identity=identity)] for text in asked]
            want_dense = [[cid for cid, _ in store.dense_search(vectors[t], K, sorted(allowed))] for t in asked]
        finally:
            del index.search
        per_group[group] = {
            "documents": len(allowed),
            "e2e": _percentiles(e2e),
            "dense": _percentiles(dense),
            "recall_e2e": _recall(got, want),
            "recall_dense": _recall(got_dense, want_dense),
            "forbidden": forbidden,
        }
        print(f"  {group}: {json.dumps(per_group[group])}", flush=True)
    result["groups"] = per_group
    store.close()
    return result


def worker(folder: Path, kind: str, server: tuple[str, int], n: int, cache: Path) -> None:
    """One API worker on the shared Chroma server: load the index, search, report memory; then, on request, time
    how long until another process's write is found by its search. Talks in lines on stdin and stdout."""
    before = _memory()
    started = time.perf_counter()
    store = _store(folder, kind, server)
    store.load_index()
    loaded = time.perf_counter() - started
    queries = np.load(generate(n, SEED, cache) / f"q_{corpus.SELECTIVITIES[1]}.npy")[:50]
    allowed = store.allowed_documents({"group:s10"})
    for q in queries:
        store.dense_search(q, K, allowed)
    print("LOADED " + json.dumps({"load_s": round(loaded, 2), "before": before, "after": _memory()}), flush=True)
    for line in sys.stdin:
        if not line.startswith("FIND "):
            break
        chunk_id, doc, vector = json.loads(line[len("FIND ") :])
        asked, searches = time.perf_counter(), 1
        while not any(cid == chunk_id for cid, _ in store.dense_search(vector, K, [doc])):
            time.sleep(0.005)
            searches += 1
        found = {"visible_after_s": round(time.perf_counter() - asked, 3), "searches": searches}
        print("FOUND " + json.dumps(found | {"deltas": store.keeper.deltas}), flush=True)
    store.close()


def run_workers(args: argparse.Namespace, folder: Path) -> dict:
    """Two workers on a ``chroma run`` server over the store; this process writes 1,000 chunks of a new document
    and the second worker times how long until its search finds them."""
    from rag.schemas import ChunkRecord

    port = _free_port()
    chroma = shutil.which("chroma", path=str(Path(sys.executable).parent)) or "chroma"
    server = subprocess.Popen(
        [chroma, "run", "--path", str(folder / "chroma"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )  # fmt: skip
    workers: list[subprocess.Popen] = []
    try:
        _wait_for(port, server)
        result: dict = {}
        for name in ("worker1", "worker2"):  # one after the other: the second finds the first's pages cached
            command = [*_command(args, "worker"), f"--server=127.0.0.1:{port}"]
            workers.append(subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
            result[name] = _reply(workers[-1], "LOADED ")
            print(f"  {name}: {json.dumps(result[name])}", flush=True)
        w1, w2 = result["worker1"], result["worker2"]
        index_mb = w1["after"]["rss_mb"] - w1["before"]["rss_mb"]
        added_mb = w2["after"]["private_mb"] - w2["before"]["private_mb"]
        result["second_worker_adds"] = {"index_rss_mb": index_mb, "added_private_mb": added_mb}
        result["second_worker_adds"]["ratio"] = round(added_mb / max(1, index_mb), 3)
        store = _store(folder, args.index, ("127.0.0.1", port))
        rng = np.random.default_rng(7)
        doc = f"delta-{int(time.time())}"
        vectors = rng.standard_normal((1000, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        records = [
            ChunkRecord(id=f"{doc}-{i}", text=f"delta chunk {i}", embed_text=f"delta chunk {i}",
                        metadata={"doc_id": doc, "chunk_index": i, "source": "bench"})
            for i in range(1000)
        ]  # fmt: skip
        store.docstore.begin(doc, f"/bench/{doc}.txt", ["group:all"])
        started = time.perf_counter()
        store.upsert(records, vectors.tolist())
        result["write_1000_s"] = round(time.perf_counter() - started, 2)
        store.docstore.commit(
            doc, path=f"/bench/{doc}.txt", title=doc, doc_type="text", content_hash=doc, size_bytes=0,
            chunk_count=1000, acl=["group:all"],
        )  # fmt: skip
        workers[1].stdin.write("FIND " + json.dumps([records[-1].id, doc, vectors[-1].tolist()]) + "\n")
        workers[1].stdin.flush()
        result["delta"] = _reply(workers[1], "FOUND ")
        print(f"  delta: write {result['write_1000_s']} s, {json.dumps(result['delta'])}", flush=True)
        store.delete([r.id for r in records])
        store.docstore.forget(doc)
        store.close()
        return result
    finally:
        for process in workers:
            if process.stdin:
                process.stdin.close()
            process.wait(60)
        server.terminate()
        server.wait(30)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(port: int, server: subprocess.Popen) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("chroma run did not start")


def _reply(process: subprocess.Popen, prefix: str) -> dict:
    for line in process.stdout:
        if line.startswith(prefix):
            return json.loads(line[len(prefix) :])
        print(line, end="", flush=True)
    raise RuntimeError(f"a worker stopped before its {prefix.strip()} line")


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
    parser.add_argument("--workers", action="store_true", help="also two workers on a Chroma server, and a delta")
    parser.add_argument("--phase", choices=["all", "queries", "worker"], default="all", help=argparse.SUPPRESS)
    parser.add_argument("--server", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    IVF_OPTIONS.update(
        {name: value for name in ("min_rows", "exact_below") if (value := getattr(args, f"ivf_{name}")) is not None}
    )
    folder, cache = args.data / f"{args.index}-{args.n}", args.vectors
    if args.phase == "queries":
        print("RESULT " + json.dumps(run_queries(folder, args.index, args.n, cache, args.queries)), flush=True)
        return
    if args.phase == "worker":
        host, port = args.server.rsplit(":", 1)
        worker(folder, args.index, (host, int(port)), args.n, cache)
        return
    report = {"build": build(folder, args.n, args.index, cache)}
    print(f"build: {report['build']}", flush=True)
    report["queries"] = _child(args, "queries")
    if args.workers:
        report["workers"] = run_workers(args, folder)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


def _command(args: argparse.Namespace, phase: str) -> list[str]:
    command = [sys.executable, "-m", "eval.bench_store_scale", "--phase", phase, "--n", str(args.n)]
    command += ["--index", args.index, "--data", str(args.data), "--vectors", str(args.vectors)]
    command += ["--queries", str(args.queries)]
    return command + [f"--ivf-{name.replace('_', '-')}={value}" for name, value in IVF_OPTIONS.items()]


def _child(args: argparse.Namespace, phase: str) -> dict:
    """Run one phase in a fresh process (its memory and start-up figures are its own); its RESULT line."""
    output = subprocess.run(_command(args, phase), check=True, stdout=subprocess.PIPE, text=True).stdout
    for line in output.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
        print(line, flush=True)
    raise RuntimeError(f"the {phase} phase printed no result")


if __name__ == "__main__":
    main()
