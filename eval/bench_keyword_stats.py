"""Cost of keyword statistics scoped to the caller (``DocStore.keyword_search``) against FTS5's own ``bm25()``
over every chunk (the way before), on one synthetic registry, in the same run.

    python -m eval.bench_keyword_stats --chunks 50000 --queries 200

Documents of 10 chunks, words drawn from a Zipf-like vocabulary; a third of the documents public, the rest in one
of five groups. Callers: public only, and public plus one group. Prints p50/p95 milliseconds per query and the
ratio new/old."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from rag.docstore import COMMON_FLOOR, DocStore, fts_terms


def build(path: Path, chunks: int, seed: int = 0) -> DocStore:
    rng = np.random.default_rng(seed)
    vocabulary = [f"w{i}" for i in range(20000)]
    weights = 1.0 / np.arange(1, len(vocabulary) + 1)
    weights /= weights.sum()
    store = DocStore(path)
    for doc in range(chunks // 10):
        acl = ["public"] if doc % 3 == 0 else [f"group:g{doc % 5}"]
        doc_id = f"d{doc}"
        store.begin(doc_id, f"/docs/{doc_id}.md", acl)
        rows = []
        for i in range(10):
            text = " ".join(rng.choice(vocabulary, size=int(rng.integers(40, 160)), p=weights))
            rows.append((f"{doc_id}-{i}", doc_id, text, text))
        store.put_chunks(rows)
        store.commit(
            doc_id, path=f"/docs/{doc_id}.md", title=doc_id, doc_type="md", content_hash=doc_id, size_bytes=1,
            chunk_count=10, acl=acl,
        )  # fmt: skip
    return store


def old_keyword_search(store: DocStore, query: str, top_k: int, tokens: set[str], share: float = 0.02) -> list:
    """The way before: FTS5's bm25() (statistics over all chunks), common words chosen over all chunks."""
    words = fts_terms(query)
    with store._reader() as conn:
        total = conn.execute("SELECT count(*) FROM chunks").fetchone()[0] or 1
        marks = ",".join("?" * len(words))
        found = dict(conn.execute(f"SELECT term, doc FROM chunks_vocab WHERE term IN ({marks})", words))
        present = sorted((found[w], w) for w in words if w in found)
        limit = max(share * total, COMMON_FLOOR)
        terms = [w for df, w in present if df <= limit] or [w for _, w in present[:2]]
        if not terms:
            return []
        where, params = store._visible(tokens, None)
        sql = (
            "SELECT c.id, -bm25(chunks_fts) FROM chunks_fts JOIN chunks c ON c.rowid = chunks_fts.rowid "
            f"WHERE chunks_fts MATCH ? AND EXISTS (SELECT 1 FROM documents d WHERE d.doc_id = c.doc_id AND {where}) "
            "ORDER BY bm25(chunks_fts) LIMIT ?"
        )
        return conn.execute(sql, [" OR ".join(f'"{t}"' for t in terms), *params, top_k]).fetchall()


def timed(fn, queries: list[str]) -> list[float]:  # noqa: ANN001
    spent = []
    for query in queries:
        started = time.perf_counter()
        fn(query)
        spent.append((time.perf_counter() - started) * 1000)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=50000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        store = build(Path(folder) / "registry.sqlite3", args.chunks)
        print(f"{args.chunks} chunks built in {time.perf_counter() - started:.1f} s")
        # Queries of 2-5 words: one common (rank 1-50), the others rarer (rank 50-5000).
        queries = [
            " ".join([f"w{rng.integers(0, 50)}"] + [f"w{rng.integers(50, 5000)}" for _ in range(rng.integers(1, 5))])
            for _ in range(args.queries)
        ]
        for name, tokens in (("public", {"public"}), ("public+group", {"public", "group:g1"})):
            old = timed(lambda q, t=tokens: old_keyword_search(store, q, 50, t), queries)
            new = timed(lambda q, t=tokens: store.keyword_search(q, 50, t), queries)
            p50_old, p50_new = statistics.median(old), statistics.median(new)
            p95_old, p95_new = np.percentile(old, 95), np.percentile(new, 95)
            print(
                f"{name:13s} old p50 {p50_old:7.2f} ms p95 {p95_old:7.2f} ms | new p50 {p50_new:7.2f} ms "
                f"p95 {p95_new:7.2f} ms | ratio p50 {p50_new / p50_old:.2f} p95 {p95_new / p95_old:.2f}"
            )
        store.close()


if __name__ == "__main__":
    main()
