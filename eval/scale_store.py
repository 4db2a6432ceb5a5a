"""What `make bench-scale`'s processes share (eval/bench_store_scale.py, eval/scale_workers.py): the store they
open, chunk ids, memory and latency figures, and how one phase starts another in a fresh process."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from eval import scale_corpus as corpus

COLLECTION = "scale"
BATCH = 5000
K = 10
SEED = 16  # the seed of eval/bench_scale.py's cached runs
GROUPS = [*(f"s{s}" for s in corpus.SELECTIVITIES), "all"]


IVF_OPTIONS: dict[str, int] = {}  # IvfIndex keyword arguments (the small CI run lowers its thresholds)


def open_store(folder: Path, kind: str, server: tuple[str, int] | None = None):  # noqa: ANN202 - rag types
    from functools import partial

    from rag.ivf_index import IvfIndex
    from rag.store import ChromaStore
    from rag.vector_index import ExactIndex

    new_index = partial(IvfIndex, **IVF_OPTIONS) if kind == "ivf" else ExactIndex
    return ChromaStore(folder / "chroma", COLLECTION, server=server, new_index=new_index)


def chunk_id(i: int) -> str:
    return f"c{i:08d}"


def memory() -> dict[str, float]:
    """This process's RSS and its private and shared resident memory, in MB (smaps_rollup)."""
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0]) / 1024
    private = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return {"rss_mb": round(fields["Rss"]), "private_mb": round(private), "pss_mb": round(fields["Pss"])}


def percentiles(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values) * 1000
    return {"p50_ms": round(float(np.percentile(arr, 50)), 1), "p95_ms": round(float(np.percentile(arr, 95)), 1)}


def recall(got: list[list[str]], want: list[list[str]]) -> float:
    """Mean recall@10 of each result list against the exact pipeline's."""
    shares = [len(set(a[:K]) & set(b[:K])) / max(1, min(K, len(b))) for a, b in zip(got, want, strict=True)]
    return round(float(np.mean(shares)), 4)


def command(args: argparse.Namespace, phase: str) -> list[str]:
    command = [sys.executable, "-m", "eval.bench_store_scale", "--phase", phase, "--n", str(args.n)]
    command += ["--index", args.index, "--data", str(args.data), "--vectors", str(args.vectors)]
    command += ["--queries", str(args.queries), "--codec", args.codec]
    return command + [f"--ivf-{name.replace('_', '-')}={value}" for name, value in IVF_OPTIONS.items()]


def child(args: argparse.Namespace, phase: str) -> dict:
    """Run one phase in a fresh process (its memory and start-up figures are its own); its RESULT line."""
    output = subprocess.run(command(args, phase), check=True, stdout=subprocess.PIPE, text=True).stdout
    for line in output.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
        print(line, flush=True)
    raise RuntimeError(f"the {phase} phase printed no result")
