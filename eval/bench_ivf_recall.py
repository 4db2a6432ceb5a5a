"""Recall@10 of the IVF index against the exact scan on real embeddings (issue 16): the vectors of an existing
store (e.g. one `rag eval` built from a real manual), the IVF trained on all of them, and as queries the real
questions of an eval set plus stored chunks moved slightly. One line per share of the IVF's lists probed.

    python -m eval.bench_ivf_recall --data-dir /path/to/data --dataset eval/datasets/gitdoc_eval.jsonl

The store is read from a copy (opening a store writes its saved index), so the data dir is left as it was.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

SHARES = (1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True, help="rag eval JSONL: its questions are the queries")
    args = parser.parse_args(argv)
    from rag.container import build_embedder, build_store
    from rag.ivf_index import IvfIndex
    from rag.settings import load_settings
    from rag.vector_index import ExactIndex

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "data"
        shutil.copytree(args.data_dir, work, ignore=shutil.ignore_patterns("writer.lock"))
        settings = load_settings(data_dir=work)
        store = build_store(settings)
        ids = sorted(store.all_ids())
        found = store.vectors(ids)
        docs_of = {c.id: str(c.metadata.get("doc_id")) for c in store.chunks([(i, 0.0) for i in ids])}
        store.close()
    ids = [i for i in ids if i in found and i in docs_of]
    docs = [docs_of[i] for i in ids]
    vectors = np.stack([found[i] for i in ids]).astype(np.float32)
    embedder = build_embedder(settings)
    embedder.load()
    questions = [json.loads(line)["question"] for line in args.dataset.read_text().splitlines() if line.strip()]
    rng = np.random.default_rng(0)
    picked = vectors[rng.choice(len(vectors), min(200, len(vectors)), replace=False)]
    query_sets = {
        "questions": np.asarray([embedder.embed_query(q) for q in questions], dtype=np.float32),
        "near-chunk": picked + rng.normal(size=picked.shape).astype(np.float32) * 0.03,
    }
    exact = ExactIndex()
    exact.add(ids, docs, vectors)
    ivf = IvfIndex(min_rows=0, exact_below=0)
    ivf.add(ids, docs, vectors)
    ivf.retrain()
    print(f"{args.data_dir}: {len(ids)} chunks, nlist {ivf.nlist}")
    truth = {name: [[c for c, _ in exact.search(q, 10)] for q in qs] for name, qs in query_sets.items()}
    for share in SHARES:
        ivf.nprobe = max(1, round(ivf.nlist * share))
        recalls = {name: _recall(ivf, qs, truth[name]) for name, qs in query_sets.items()}
        print(f"  nprobe {ivf.nprobe}/{ivf.nlist}: " + ", ".join(f"{n} {r:.3f}" for n, r in recalls.items()))


def _recall(index, queries: np.ndarray, truth: list[list[str]]) -> float:  # noqa: ANN001 - an IvfIndex
    shares = [len(set(want) & {c for c, _ in index.search(q, 10)}) / 10 for q, want in zip(queries, truth, strict=True)]
    return float(np.mean(shares))


if __name__ == "__main__":
    main()
