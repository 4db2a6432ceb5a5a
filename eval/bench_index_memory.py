"""What a second worker adds to memory for the search index, and how long a saved index takes to load (issue 16:
"a second worker on the same host adds <= 25% of the first worker's RSS for the index"; "a clean restart at
1 million chunks is ready in <= 20 s", the index-load part).

Run (from the repository root, in the project's venv; the default size needs about 6 GB of memory and minutes)::

    nice -n 5 python eval/bench_index_memory.py                       # 1,000,000 x 384, IvfIndex and ExactIndex
    nice -n 5 python eval/bench_index_memory.py --n 50000 --queries 10            # a quick look

Builds an index of ``--n`` synthetic unit vectors (clustered: a few thousand topics, one per document, 20 chunks a
document; seeded, so reruns agree), saves it under ``--folder`` (reused when already there), then starts worker 1
and worker 2 as separate processes, one after the other, each loading the saved copy and running ``--queries``
searches filtered to a tenth of the documents. This process reads each worker's ``/proc/<pid>/smaps_rollup``
before its load, after it, after its searches, and worker 1's again once worker 2 has searched too:

- the index's RSS in worker 1: its Rss after searching less its Rss before loading;
- what worker 2 adds: its Private (Private_Clean + Private_Dirty) after searching less before loading, the memory
  no other process shares; Anonymous (heap) is shown beside it, as file pages private to one worker are still
  page cache, not a copy;
- the ratio of the two.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one search thread, as a serving worker's request has
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from rag.index_files import load_index  # noqa: E402
from rag.ivf_index import MIN_ROWS, IvfIndex  # noqa: E402
from rag.vector_index import ExactIndex  # noqa: E402

CHUNKS_PER_DOC = 20
FIELDS = ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Shared_Clean", "Shared_Dirty", "Anonymous")
MB = 1 << 20


def make_index(kind: str, codec: str, min_rows: int = MIN_ROWS):  # noqa: ANN201 - a SearchIndex
    return ExactIndex() if kind == "exact" else IvfIndex(min_rows=min_rows, codec=codec)


def chunk_vectors(n: int, start: int, stop: int, dim: int, seed: int) -> np.ndarray:
    """Rows ``start``..``stop`` of the synthetic set of ``n``: each document's chunks near its topic's centre (a
    topic per 50 documents), unit length. Seeded by the document number, so a row is the same in any block."""
    topics = np.random.default_rng(seed).normal(size=(max(16, n // CHUNKS_PER_DOC // 50), dim))
    out = np.empty((stop - start, dim), dtype=np.float32)
    for doc in range(start // CHUNKS_PER_DOC, (stop - 1) // CHUNKS_PER_DOC + 1):
        rng = np.random.default_rng((seed, doc))
        rows = slice(max(start, doc * CHUNKS_PER_DOC) - start, min(stop, (doc + 1) * CHUNKS_PER_DOC) - start)
        count = rows.stop - rows.start
        centre = topics[rng.integers(topics.shape[0])] + 0.6 * rng.normal(size=dim)
        out[rows] = centre + 0.8 * rng.normal(size=(count, dim))
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def build(args: argparse.Namespace, folder: Path, kind: str) -> dict:
    """Save an index of the synthetic set under ``folder`` unless one is there; the time it took."""
    if (folder / "manifest.json").exists():
        return {"kind": kind, "reused": True}
    started = time.perf_counter()
    if kind == "exact" and (args.folder / "ivf" / "manifest.json").exists():  # the same rows: no second build
        index = make_index("exact", args.codec)
        index.restore(load_index(args.folder / "ivf", "ivf"), args.folder / "ivf")
    else:
        index = make_index(kind, args.codec, min_rows=args.n - 1)  # trained once, when the last batch lands
        for start in range(0, args.n, args.batch):
            stop = min(args.n, start + args.batch)
            ids = [f"doc{i // CHUNKS_PER_DOC:07d}-chunk{i:08d}" for i in range(start, stop)]
            index.add(ids, [i[:10] for i in ids], chunk_vectors(args.n, start, stop, args.dim, args.seed))
    built = time.perf_counter()
    index.save(folder, version=1)
    saved = time.perf_counter()
    return {"kind": kind, "reused": False, "build_s": round(built - started, 1), "save_s": round(saved - built, 1)}


def smaps(pid: int) -> dict[str, int]:
    """This process's memory from /proc/<pid>/smaps_rollup, in bytes."""
    figures = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        if name in FIELDS:
            figures[name] = int(rest.split()[0]) * 1024
    figures["Private"] = figures["Private_Clean"] + figures["Private_Dirty"]
    figures["Shared"] = figures["Shared_Clean"] + figures["Shared_Dirty"]
    return figures


def index_files(pid: int, folder: Path) -> dict[str, dict[str, int]]:
    """Rss and Private (MB) of each saved index file this process maps, from /proc/<pid>/smaps: where the private
    file pages are. (The kernel maps page cache in large folios, up to 2 MB per touched row.)"""
    figures: dict[str, dict[str, int]] = {}
    current = None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if len(head) >= 5 and "-" in head[0] and ":" not in head[0]:  # a mapping's first line
            current = Path(head[5]).name.split("-")[0] if len(head) > 5 and str(folder) in head[5] else None
        elif current and head[0] in ("Rss:", "Private_Clean:", "Private_Dirty:"):
            entry = figures.setdefault(current, {"Rss": 0, "Private": 0})
            entry["Rss" if head[0] == "Rss:" else "Private"] += int(head[1]) // 1024
    return figures


def worker(args: argparse.Namespace) -> None:
    """One worker: load when told, search when told, exit when told; each step's result as a JSON line."""
    import faiss  # noqa: F401 - loaded before the "before" figures, as a serving worker has it loaded

    index = make_index(args.kind, args.codec)
    steps = iter(sys.stdin)
    print(json.dumps({"step": "ready"}), flush=True)
    next(steps)
    started = time.perf_counter()
    index.load(args.folder / args.kind)
    print(json.dumps({"step": "loaded", "load_s": round(time.perf_counter() - started, 2)}), flush=True)
    next(steps)
    rng = np.random.default_rng(args.seed + 1000 + args.worker)
    docs = sorted(index.doc_ids)
    allowed = sorted(rng.choice(docs, size=max(1, len(docs) // 10), replace=False).tolist())
    rows = rng.integers(args.n, size=args.queries)
    times, hits = [], 0
    for row in rows:
        query = chunk_vectors(args.n, int(row), int(row) + 1, args.dim, args.seed)[0] + 0.05 * rng.normal(size=args.dim)
        started = time.perf_counter()
        hits += len(index.search(query, 10, allowed))
        times.append(time.perf_counter() - started)
    ms = np.asarray(times) * 1000
    result = {"step": "searched", "p50_ms": round(float(np.median(ms)), 1), "max_ms": round(float(ms.max()), 1)}
    print(json.dumps(result | {"hits": hits, "chunks": len(index)}), flush=True)
    next(steps, None)


class Worker:
    """A worker process, stepped through its protocol; its memory read from outside at each step."""

    def __init__(self, args: argparse.Namespace, kind: str, number: int) -> None:
        command = [sys.executable, __file__, "--worker", str(number), "--kind", kind]
        command += ["--folder", str(args.folder), "--n", str(args.n), "--dim", str(args.dim)]
        command += ["--seed", str(args.seed), "--queries", str(args.queries), "--codec", args.codec]
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.figures: dict[str, dict] = {}
        self.read("before")

    def read(self, name: str) -> dict:
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise SystemExit(f"worker {self.proc.args[3]} stopped at step {name!r}")
        self.figures[name] = smaps(self.proc.pid)
        return json.loads(line)

    def step(self, name: str) -> dict:
        self.proc.stdin.write("go\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return self.read(name)

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait()


def measure(args: argparse.Namespace, kind: str) -> dict:
    first = Worker(args, kind, 1)
    load1, search1 = first.step("loaded"), first.step("searched")
    second = Worker(args, kind, 2)
    load2, search2 = second.step("loaded"), second.step("searched")
    first.figures["with_second"] = smaps(first.proc.pid)
    files = index_files(second.proc.pid, args.folder.resolve())
    first.close()
    second.close()
    w1, w2 = first.figures, second.figures
    index_rss = w1["searched"]["Rss"] - w1["before"]["Rss"]
    added = w2["searched"]["Private"] - w2["before"]["Private"]
    return {
        "kind": kind,
        "load_s": [load1["load_s"], load2["load_s"]],
        "search_p50_ms": [search1["p50_ms"], search2["p50_ms"]],
        "worker1_mb": {step: {k: round(v / MB) for k, v in f.items()} for step, f in w1.items()},
        "worker2_mb": {step: {k: round(v / MB) for k, v in f.items()} for step, f in w2.items()},
        "index_rss_worker1_mb": round(index_rss / MB),
        "worker2_private_added_mb": round(added / MB),
        "worker2_anonymous_added_mb": round((w2["searched"]["Anonymous"] - w2["before"]["Anonymous"]) / MB),
        "ratio": round(added / index_rss, 3) if index_rss else None,
        "ratio_anonymous": round((w2["searched"]["Anonymous"] - w2["before"]["Anonymous"]) / index_rss, 3)
        if index_rss
        else None,
        "worker2_index_files_mb": files,
    }


def report(result: dict) -> None:
    print(f"\n== {result['kind']}: load {result['load_s'][0]} s / {result['load_s'][1]} s (worker 1 / 2), "
          f"search p50 {result['search_p50_ms'][0]} / {result['search_p50_ms'][1]} ms")  # fmt: skip
    print(f"{'worker':8} {'step':12} " + " ".join(f"{k:>9}" for k in ("Rss", "Pss", "Private", "Shared", "Anonymous")))
    for number in (1, 2):
        for step, f in result[f"worker{number}_mb"].items():
            row = " ".join(f"{f[k]:>9}" for k in ("Rss", "Pss", "Private", "Shared", "Anonymous"))
            print(f"{number:<8} {step:12} {row}  (MB)")
    rss, added = result["index_rss_worker1_mb"], result["worker2_private_added_mb"]
    print(f"index RSS in worker 1: {rss} MB; worker 2 adds {added} MB private", end=" ")
    print(f"({result['worker2_anonymous_added_mb']} MB anonymous): ratio {result['ratio']}", end=" ")
    print(f"(anonymous only: {result['ratio_anonymous']})")
    print(f"worker 2's mapped index files (MB): {json.dumps(result['worker2_index_files_mb'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--codec", default="flat", choices=("flat", "sq8"))
    parser.add_argument("--kinds", default="ivf,exact")
    parser.add_argument("--folder", type=Path, default=None, help="saved copies (default: a cache folder by size)")
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="ivf", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    if args.folder is None:
        args.folder = Path("eval-runs/bench_index_memory") / f"n{args.n}_d{args.dim}_s{args.seed}_{args.codec}"
    if args.worker:
        worker(args)
        return
    kinds = args.kinds.split(",")
    results = {"n": args.n, "dim": args.dim, "codec": args.codec, "builds": [], "workers": []}
    for kind in sorted(kinds, key=lambda k: k != "ivf"):  # the exact copy is made from the ivf one's rows
        results["builds"].append(build(args, args.folder / kind, kind))
        print(json.dumps(results["builds"][-1]), flush=True)
    for kind in kinds:
        results["workers"].append(measure(args, kind))
        report(results["workers"][-1])
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
