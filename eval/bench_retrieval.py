"""Retrieval latency under access control at 10,000 and 100,000 chunks, beside Chroma's bare query.

Run: ``python -m eval.bench_retrieval [--sizes 10000,100000] [--queries 200]``.

For each size, a fresh store in a temporary folder gets synthetic chunks: random unit vectors (384 dimensions,
the embedder's) and texts of words drawn with a Zipf-like skew from a 5,000-word vocabulary, 10 chunks per
document. Documents get ACL tokens: half public, the rest spread over 20 groups, and 1 in 500 private to one
user. Each query then runs the product's own path for a user in 2 groups:

- query embedding (the configured embedder, on a real question);
- the caller's documents resolved from the registry (the access filter);
- the dense leg (exact scores, masked by the filter) and the BM25 leg (FTS5, filter in the SQL);
- reciprocal rank fusion and fetching the top chunks' metadata and text.

It prints p50/p95 of the whole (embedding + hybrid search + filters) and of its parts, next to Chroma's own
unfiltered query (n_results=10) and Chroma's query with the access filter as a metadata ``where``, on the same
collection in the same run. Target: p95 <= 50 ms at 100,000 chunks on a 2-core machine.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import rag  # noqa: F401  - offline switches first
from eval.metrics import percentile
from rag.acl import Identity, acl_metadata
from rag.container import build_embedder
from rag.retrieval import Retriever
from rag.schemas import ChunkRecord
from rag.settings import RetrievalSettings, load_settings
from rag.store import ChromaStore

DIM = 384
CHUNKS_PER_DOC = 10
GROUPS = [f"g{i:02d}" for i in range(20)]
QUESTIONS = [
    "How do I rotate the backup keys on the archive server?",
    "What is the retention period for incident reports?",
    "Which budget approval is needed for a new supplier contract?",
    "How many days of holiday can I carry over to next year?",
    "Who signs off the quarterly security audit report?",
    "What does the travel policy allow for long flights?",
    "How is the payroll pension contribution calculated?",
    "Where do I request access to the network printer?",
]


def vocabulary(size: int = 5000, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: set[str] = set()
    for line in QUESTIONS:  # the questions' own words exist in the corpus
        words.update(w.strip("?").lower() for w in line.split())
    while len(words) < size:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(4, 10))))
    return sorted(words)


def document_acl(doc: int) -> list[str]:
    if doc % 500 == 7:
        return ["user:solo"]
    if doc % 2 == 0:
        return ["public"]
    return [f"group:{GROUPS[doc % len(GROUPS)]}"]


def build(path: Path, size: int, seed: int = 11) -> ChromaStore:
    """A store of ``size`` synthetic chunks, written through the product's own store and registry."""
    rng = np.random.default_rng(seed)
    words = vocabulary()
    weights = 1.0 / np.arange(1, len(words) + 1)  # Zipf-like: a few common words, a long tail
    weights /= weights.sum()
    store = ChromaStore(path / "chroma", "bench")
    registry = store.docstore
    batch_records: list[ChunkRecord] = []
    batch_vectors: list[np.ndarray] = []
    for doc in range(size // CHUNKS_PER_DOC):
        doc_id, acl = f"doc{doc:06d}", document_acl(doc)
        registry.begin(doc_id, f"/bench/{doc_id}.md", acl)
        vectors = rng.standard_normal((CHUNKS_PER_DOC, DIM)).astype(np.float32)
        for i in range(CHUNKS_PER_DOC):
            text = " ".join(rng.choice(words, size=60, p=weights))
            metadata = {"doc_id": doc_id, "source": f"/bench/{doc_id}.md", "title": doc_id, **acl_metadata(acl)}
            batch_records.append(ChunkRecord(id=f"{doc_id}-{i}", text=text, embed_text=text, metadata=metadata))
        batch_vectors.append(vectors)
        registry.commit(
            doc_id,
            path=f"/bench/{doc_id}.md",
            title=doc_id,
            doc_type="markdown",
            content_hash=doc_id,
            size_bytes=0,
            chunk_count=CHUNKS_PER_DOC,
            acl=acl,
        )
        if len(batch_records) >= 2000:
            store.upsert(batch_records, np.concatenate(batch_vectors).tolist())
            batch_records, batch_vectors = [], []
    if batch_records:
        store.upsert(batch_records, np.concatenate(batch_vectors).tolist())
    return store


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def line(name: str, values: list[float]) -> str:
    return f"  {name:52s} p50 {percentile(values, 50):7.1f} ms   p95 {percentile(values, 95):7.1f} ms"


def run(size: int, queries: int, embedder, settings: RetrievalSettings) -> dict[str, list[float]]:  # noqa: ANN001
    with tempfile.TemporaryDirectory(prefix="rag-bench-retrieval-") as tmp:
        started = time.perf_counter()
        build(Path(tmp), size).close()  # written and let go, as after an ingest job
        built = time.perf_counter() - started
        store = ChromaStore(Path(tmp) / "chroma", "bench")  # opened afresh, as by a server starting
        started = time.perf_counter()
        store.index  # noqa: B018 - loaded from Chroma's records, as at a server's first query
        loaded = time.perf_counter() - started
        retriever = Retriever(embedder, store, settings)
        identity = Identity.of("ann", [GROUPS[1], GROUPS[3]])
        tokens = identity.tokens()
        store.collection.query(query_embeddings=[[0.0] * DIM], n_results=1)  # warm Chroma's own index too
        where = {"acl": {"$in": sorted(tokens)}}  # every synthetic document has exactly one token
        times: dict[str, list[float]] = {
            k: [] for k in ("total", "cold", "embed", "filter", "dense", "keyword", "chroma_bare", "chroma_where")
        }
        for n in range(queries):
            question = QUESTIONS[n % len(QUESTIONS)] + f" ({n})"
            times["total"].append(timed(lambda q=question: retriever.retrieve(q, 5, identity=identity)))
            retriever.clear_cache()  # as for a caller's first query after a write that changed access
            times["cold"].append(timed(lambda q=question + " ?": retriever.retrieve(q, 5, identity=identity)))
            vector: list[float] = []
            times["embed"].append(timed(lambda q=question, out=vector: out.extend(embedder.embed_query(q))))
            allowed: list[str] = []
            times["filter"].append(timed(lambda out=allowed: out.extend(store.docstore.allowed_documents(tokens))))
            times["dense"].append(timed(lambda v=vector, a=allowed: store.index.search(v, settings.candidates, a)))
            times["keyword"].append(
                timed(
                    lambda q=question: store.docstore.keyword_search(
                        q, settings.candidates, tokens, None, settings.keyword_common_share
                    )
                )
            )
            times["chroma_bare"].append(
                timed(lambda v=vector: store.collection.query(query_embeddings=[v], n_results=10))
            )
            if n < 40:  # slow: a smaller sample is enough to show it
                times["chroma_where"].append(
                    timed(lambda v=vector: store.collection.query(query_embeddings=[v], n_results=10, where=where))
                )
        chunks = store.count()
        store.close()
    print(
        f"\n{chunks:,} chunks ({chunks // CHUNKS_PER_DOC:,} documents), built in {built:.0f} s, index loaded in "
        f"{loaded:.1f} s; {queries} queries as a user in 2 of 20 groups"
    )
    print(line("ours: embedding + hybrid search + access filter", times["total"]))
    print(line("ours, the caller's document list not cached", times["cold"]))
    print(line("  query embedding", times["embed"]))
    print(line("  access filter (caller's documents, registry)", times["filter"]))
    print(line("  dense leg (exact, masked)", times["dense"]))
    print(line("  keyword leg (FTS5 BM25, filter in SQL)", times["keyword"]))
    print(line("Chroma bare query, unfiltered, same collection", times["chroma_bare"]))
    print(line(f"Chroma query with the access filter as where ({len(times['chroma_where'])} q)", times["chroma_where"]))
    ratio = percentile(times["total"], 95) / percentile(times["chroma_bare"], 95)
    print(f"  ours p95 / Chroma bare p95: {ratio:.1f}x")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="Comma-separated chunk counts.")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    settings = load_settings()
    embedder = build_embedder(settings)
    embedder.load()
    print(
        f"embedder {embedder.model_id} ({settings.embedding.backend}); retrieval mode hybrid, "
        f"{settings.retrieval.candidates} candidates per leg"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        run(size, args.queries, embedder, settings.retrieval)


if __name__ == "__main__":
    main()
