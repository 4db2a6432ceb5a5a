"""Recall@10 of the IVF index against the exact scan on real embeddings (issue 16): the vectors of an existing
store (e.g. one `rag eval` built from a real manual), the IVF trained on all of them, and as queries the real
questions of an eval set plus stored chunks moved slightly. One line per share of the IVF's lists probed.

    python -m eval.bench_ivf_recall --data-dir /path/to/data --dataset eval/datasets/gitdoc_eval.jsonl
    python -m eval.bench_ivf_recall --corpus /usr/share/doc --windows 60000 --dataset eval/datasets/gitdoc_eval.jsonl

The store is read from a copy (opening a store writes its saved index), so the data dir is left as it was.
``--corpus`` instead embeds that many 60-word windows (stride 30) of the HTML pages under a folder with the
product's embedder: real text at a size the eval stores do not reach.
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
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--corpus", type=Path, help="embed windows of the HTML pages under this folder instead")
    parser.add_argument("--windows", type=int, default=60_000)
    parser.add_argument("--dataset", type=Path, required=True, help="rag eval JSONL: its questions are the queries")
    args = parser.parse_args(argv)
    from rag.container import build_embedder
    from rag.ivf_index import IvfIndex
    from rag.settings import load_settings
    from rag.vector_index import ExactIndex

    if args.corpus:
        settings = load_settings(data_dir=Path(tempfile.gettempdir()) / "unused")
        embedder = build_embedder(settings)
        embedder.load()
        texts = _windows(args.corpus, args.windows)
        vectors = np.concatenate(
            [
                np.asarray(embedder.embed_documents(texts[i : i + 256]), dtype=np.float32)
                for i in range(0, len(texts), 256)
            ]
        )
        ids, docs = [f"w{i}" for i in range(len(texts))], [f"d{i // 20}" for i in range(len(texts))]
        source = f"{args.corpus} ({len(texts)} windows)"
    else:
        ids, docs, vectors, settings = _store_vectors(args.data_dir)
        embedder = build_embedder(settings)
        embedder.load()
        source = str(args.data_dir)
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
    print(f"{source}: {len(ids)} chunks, nlist {ivf.nlist}")
    truth = {name: [[c for c, _ in exact.search(q, 10)] for q in qs] for name, qs in query_sets.items()}
    for share in SHARES:
        ivf.nprobe = max(1, round(ivf.nlist * share))
        recalls = {name: _recall(ivf, qs, truth[name]) for name, qs in query_sets.items()}
        print(f"  nprobe {ivf.nprobe}/{ivf.nlist}: " + ", ".join(f"{n} {r:.3f}" for n, r in recalls.items()))


def _store_vectors(data_dir: Path) -> tuple:
    """(ids, doc ids, vectors, settings) of a store, read from a copy of its data dir."""
    from rag.container import build_store
    from rag.settings import load_settings

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "data"
        shutil.copytree(data_dir, work, ignore=shutil.ignore_patterns("writer.lock"))
        settings = load_settings(data_dir=work)
        store = build_store(settings)
        ids = sorted(store.all_ids())
        found = store.vectors(ids)
        docs_of = {c.id: str(c.metadata.get("doc_id")) for c in store.chunks([(i, 0.0) for i in ids])}
        store.close()
    ids = [i for i in ids if i in found and i in docs_of]
    return ids, [docs_of[i] for i in ids], np.stack([found[i] for i in ids]).astype(np.float32), settings


def _windows(folder: Path, count: int) -> list[str]:
    """``count`` windows of 60 words, stride 30, over the text of the HTML pages under ``folder`` (sorted)."""
    import html
    import re

    texts: list[str] = []
    for page in sorted(folder.rglob("*.html")):
        raw = re.sub(
            r"<script.*?</script>|<style.*?</style>|<[^>]+>", " ", page.read_text(errors="replace"), flags=re.S
        )
        words = html.unescape(raw).split()
        texts += [" ".join(words[i : i + 60]) for i in range(0, max(len(words) - 30, 1), 30)]
        if len(texts) >= count:
            break
    return texts[:count]


def _recall(index, queries: np.ndarray, truth: list[list[str]]) -> float:  # noqa: ANN001 - an IvfIndex
    shares = [len(set(want) & {c for c, _ in index.search(q, 10)}) / 10 for q, want in zip(queries, truth, strict=True)]
    return float(np.mean(shares))


if __name__ == "__main__":
    main()
