"""Which approximate-nearest-neighbour library, under an access filter, at 100,000 to 5,000,000 chunks (issue 16).

Run (in a venv holding numpy, psutil and the libraries under test; no project imports)::

    nice -n 19 python eval/bench_scale.py --n 100000 --out eval/results/scale/n100k.json
    nice -n 19 python eval/bench_scale.py --n 1000000 --queries 100 \
        --candidates exact,exact_permitted,faiss_hnsw,faiss_ivf_flat --out eval/results/scale/n1m.json

Data: synthetic 384-dimension unit vectors that look like sentence embeddings, not uniform noise (recall on
uniform random vectors says nothing): a shared offset (embeddings are anisotropic), a few thousand topic
clusters with varied spread, one topic per document and a document centre near it, 20 consecutive chunks per
document. Queries are perturbed copies of stored vectors, half of them of permitted ones. Access: a fixed
permutation of the documents; a caller sees the first 1/2, 1/10, 1/100 or 1/1000 of it.

Each candidate runs in its own process (so the RSS figures are its own): build, then for each search parameter
and selectivity the per-query latency (filter construction from the caller's rows included, one thread) and
recall@10 against the exact filtered top-10; a count of forbidden rows returned (must be 0); save. A second
process loads the saved file, memory-mapped where the library allows, and reports the load time and the RSS it
adds, split into anonymous (private to a worker) and file-backed (shared by workers through the page cache).
Data, queries and ground truth are cached under ``--cache`` so that reruns and children share them.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one search thread; threaded BLAS spins on a busy machine
import numpy as np  # noqa: E402

DIM = 384
CHUNKS_PER_DOC = 20
K = 10
SELECTIVITIES = (2, 10, 100, 1000)  # a caller sees 1/s of the documents
RANK = 24  # directions of variation per topic (manifold data)


# ----------------------------------------------------------------------------------------------- data


def generate(n: int, seed: int, cache: Path, data: str = "manifold") -> Path:
    """Write vectors, queries and exact filtered ground truth under the cache folder once; reuse them.

    ``manifold`` (default): each topic's chunks vary along 24 topic-specific directions plus a little isotropic
    noise, as sentence embeddings lie near low-dimensional manifolds. ``isotropic``: the variation is full
    384-dimension noise, so that within a topic all neighbours are near ties: a harsh, pessimistic case.
    """
    folder = cache / f"n{n}_s{seed}_{data}"
    if (folder / "done").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_docs = n // CHUNKS_PER_DOC
    n_topics = max(100, min(4000, n // 250))
    offset = rng.standard_normal(DIM).astype(np.float32)
    offset *= 0.45 / np.linalg.norm(offset)  # embeddings share a common direction (anisotropy)
    topics = rng.standard_normal((n_topics, DIM), dtype=np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    spread = rng.uniform(0.35, 1.0, n_topics).astype(np.float32)  # some topics tight, some diffuse
    doc_topic = rng.zipf(1.3, n_docs) % n_topics  # a few big topics, a long tail
    bases = None
    if data == "manifold":
        bases = rng.standard_normal((n_topics, RANK, DIM), dtype=np.float32)
        bases /= np.linalg.norm(bases, axis=2, keepdims=True)

    def variation(t: np.ndarray, m: int) -> np.ndarray:
        """m deviations per topic in t, of norm about 1."""
        if bases is None:
            return _noise(rng, len(t) * m).reshape(len(t), m, DIM)
        coef = rng.standard_normal((len(t), m, RANK), dtype=np.float32) / math.sqrt(RANK)
        return np.einsum("dcr,drk->dck", coef, bases[t]) + 0.15 * _noise(rng, len(t) * m).reshape(len(t), m, DIM)

    vectors = np.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=np.float32, shape=(n, DIM))
    step = 50_000 // CHUNKS_PER_DOC
    for d0 in range(0, n_docs, step):
        docs = np.arange(d0, min(n_docs, d0 + step))
        t = doc_topic[docs]
        centre = topics[t] + (0.5 * spread[t])[:, None] * variation(t, 1)[:, 0]
        rows = centre[:, None, :] + spread[t][:, None, None] * variation(t, CHUNKS_PER_DOC) + offset
        rows = rows.reshape(-1, DIM)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        vectors[d0 * CHUNKS_PER_DOC : (d0 + len(docs)) * CHUNKS_PER_DOC] = rows
    vectors.flush()
    doc_perm = rng.permutation(n_docs)
    for s in SELECTIVITIES:
        allowed_docs = np.sort(doc_perm[: max(1, n_docs // s)])
        rows = _rows_of(allowed_docs)
        n_q = 400
        half = n_q // 2
        base = np.concatenate([rng.choice(rows, half), rng.integers(0, n, n_q - half)])
        amount = rng.uniform(0.4, 0.9, (n_q, 1)).astype(np.float32)
        q = vectors[base] + amount * variation(doc_topic[base // CHUNKS_PER_DOC], 1)[:, 0]
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        np.save(folder / f"q_{s}.npy", q.astype(np.float32))
        np.save(folder / f"docs_{s}.npy", allowed_docs)
        np.save(folder / f"gt_{s}.npy", _exact_filtered(vectors, q, rows))
    (folder / "done").write_text("ok")
    return folder


def _noise(rng: np.random.Generator, m: int) -> np.ndarray:
    return rng.standard_normal((m, DIM), dtype=np.float32) / math.sqrt(DIM)


def _rows_of(docs: np.ndarray) -> np.ndarray:
    """The chunk rows of the given documents (consecutive per document, as a doc->rows table would give)."""
    return (docs[:, None] * CHUNKS_PER_DOC + np.arange(CHUNKS_PER_DOC)).ravel()


def _exact_filtered(vectors: np.ndarray, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
    best_s = np.full((len(q), K), -np.inf, dtype=np.float32)
    best_i = np.full((len(q), K), -1, dtype=np.int64)
    for r0 in range(0, len(rows), 200_000):
        part = rows[r0 : r0 + 200_000]
        scores = q @ np.asarray(vectors[part]).T
        s = np.concatenate([best_s, scores], axis=1)
        i = np.concatenate([best_i, np.broadcast_to(part, scores.shape)], axis=1)
        top = np.argpartition(-s, K - 1, axis=1)[:, :K]
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
    return best_i


# ------------------------------------------------------------------------------------------ candidates


class Candidate:
    """One library configuration: build, filtered search, save, load."""

    params: tuple = (None,)
    param_name = ""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def build(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def search(self, q: np.ndarray, rows: np.ndarray, n: int, param) -> np.ndarray:
        raise NotImplementedError

    def save(self, path: Path) -> None:
        raise NotImplementedError

    def load(self, path: Path) -> str:
        """Load the saved index; returns how ('mmap', 'read')."""
        raise NotImplementedError


class Exact(Candidate):
    """Today's DenseIndex: the whole matrix times the query, forbidden rows masked, top-k."""

    def build(self, x):
        self.x = np.array(x)  # in memory, as DenseIndex holds it

    def search(self, q, rows, n, param):
        mask = np.zeros(n, dtype=bool)
        mask[rows] = True
        scores = self.x @ q
        scores[~mask] = -np.inf
        top = np.argpartition(-scores, K - 1)[:K]
        return top[np.argsort(-scores[top])]

    def save(self, path):
        np.save(path, self.x)

    def load(self, path):
        self.x = np.load(path, mmap_mode="r")
        return "mmap"


class ExactPermitted(Exact):
    """The fallback for selective callers: gather the permitted rows only, score them, top-k."""

    block = 4096  # gather into a reused, cache-sized buffer: one big gather of 100,000 rows costs 10x more

    def search(self, q, rows, n, param):
        if len(rows) <= self.block:
            scores = self.x[rows] @ q
        else:
            buf = np.empty((self.block, self.x.shape[1]), dtype=self.x.dtype)
            scores = np.empty(len(rows), dtype=np.float32)
            for r0 in range(0, len(rows), self.block):
                part = rows[r0 : r0 + self.block]
                np.take(self.x, part, axis=0, out=buf[: len(part)], mode="clip")  # "raise" copies first
                scores[r0 : r0 + len(part)] = buf[: len(part)] @ q
        k = min(K, len(rows))
        top = np.argpartition(-scores, k - 1)[:k]
        return rows[top[np.argsort(-scores[top])]]


def _bitmap(rows: np.ndarray, n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    return np.packbits(mask, bitorder="little")


class FaissBase(Candidate):
    def _selector(self, rows, n):
        import faiss

        bits = _bitmap(rows, n)
        return faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits)), bits  # keep bits alive

    def _add_all(self, x):
        import faiss

        for r0 in range(0, len(x), 200_000):
            self.index.add(np.ascontiguousarray(x[r0 : r0 + 200_000]))
        faiss.omp_set_num_threads(1)

    search_params = ""  # the faiss SearchParameters class; its knob is named by param_name

    def _params(self, sel, param):
        import faiss

        return getattr(faiss, self.search_params)(sel=sel, **{self.param_name: param})

    def search(self, q, rows, n, param):
        sel, _bits = self._selector(rows, n)
        _, ids = self.index.search(q[None, :], K, params=self._params(sel, param))
        return ids[0][ids[0] >= 0]

    def save(self, path):
        import faiss

        faiss.write_index(self.index, str(path))

    def load(self, path):
        import faiss

        for how, flag in (("mmap", faiss.IO_FLAG_MMAP_IFC), ("mmap", faiss.IO_FLAG_MMAP)):
            try:
                self.index = faiss.read_index(str(path), flag)
                return how + f"(flag={flag})"
            except RuntimeError:
                continue
        self.index = faiss.read_index(str(path))
        return "read"


class FaissHNSW(FaissBase):
    params = (64, 128, 256, 512, 1024)
    param_name = "efSearch"
    search_params = "SearchParametersHNSW"
    storage = "flat"

    def build(self, x):
        import faiss

        faiss.omp_set_num_threads(self.threads)
        m = 32
        if self.storage == "flat":
            self.index = faiss.IndexHNSWFlat(DIM, m, faiss.METRIC_INNER_PRODUCT)
        else:
            qt = {"sq8": faiss.ScalarQuantizer.QT_8bit, "fp16": faiss.ScalarQuantizer.QT_fp16}[self.storage]
            self.index = faiss.IndexHNSWSQ(DIM, qt, m, faiss.METRIC_INNER_PRODUCT)
            self.index.train(np.ascontiguousarray(x[:: max(1, len(x) // 100_000)]))
        self.index.hnsw.efConstruction = 80
        self._add_all(x)


class FaissHNSWSQ8(FaissHNSW):
    storage = "sq8"


class FaissHNSWFP16(FaissHNSW):
    storage = "fp16"


class FaissIVF(FaissBase):
    params = (16, 32, 64, 128, 256)
    param_name = "nprobe"
    search_params = "SearchParametersIVF"
    factory = "Flat"

    def build(self, x):
        import faiss

        faiss.omp_set_num_threads(self.threads)
        n = len(x)
        nlist = 1 << round(math.log2(4 * math.sqrt(n)))
        self.nlist = nlist
        quantizer = faiss.IndexFlatIP(DIM)
        if self.factory == "Flat":
            self.index = faiss.IndexIVFFlat(quantizer, DIM, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            qt = faiss.ScalarQuantizer.QT_8bit
            self.index = faiss.IndexIVFScalarQuantizer(quantizer, DIM, nlist, qt, faiss.METRIC_INNER_PRODUCT)
        self.index.cp.max_points_per_centroid = 64  # a training sample of 64 * nlist rows
        sample = np.ascontiguousarray(x[np.random.default_rng(0).choice(n, min(n, 64 * nlist), replace=False)])
        self.index.train(sample)
        self._quantizer = quantizer
        self._add_all(x)


class FaissIVFSQ8(FaissIVF):
    factory = "SQ8"


class Hnswlib(Candidate):
    """hnswlib with the filter as a Python callable (called once per visited node)."""

    params = (64, 128, 256, 512)
    param_name = "ef"

    def build(self, x):
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=DIM)
        self.index.init_index(max_elements=len(x), M=16, ef_construction=80)
        for r0 in range(0, len(x), 200_000):
            part = np.ascontiguousarray(x[r0 : r0 + 200_000])
            self.index.add_items(part, np.arange(r0, r0 + len(part)), num_threads=self.threads)
        self.n = len(x)

    def search(self, q, rows, n, param):
        mask = np.zeros(n, dtype=bool)
        mask[rows] = True
        allowed = mask.__getitem__
        self.index.set_ef(param)
        k = min(K, len(rows))
        labels, _ = self.index.knn_query(q[None, :], k=k, num_threads=1, filter=allowed)
        return labels[0].astype(np.int64)

    def save(self, path):
        self.index.save_index(str(path))

    def load(self, path):
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=DIM)
        self.index.load_index(str(path))
        return "read"


class Usearch(Candidate):
    """usearch 2.x: its Python API has no filter predicate, so: oversample the top-k, then drop forbidden rows."""

    params = (64, 128, 256)
    param_name = "expansion_search"
    dtype = "f32"

    def build(self, x):
        from usearch.index import Index

        self.index = Index(ndim=DIM, metric="ip", dtype=self.dtype, connectivity=16, expansion_add=80)
        for r0 in range(0, len(x), 200_000):
            part = np.ascontiguousarray(x[r0 : r0 + 200_000])
            self.index.add(np.arange(r0, r0 + len(part)), part, threads=self.threads)

    def search(self, q, rows, n, param):
        mask = np.zeros(n, dtype=bool)
        mask[rows] = True
        self.index.expansion_search = param
        want = min(len(mask), 2000, max(K, int(K * 2 * n / len(rows))))
        m = self.index.search(q, want, threads=1)
        keys = m.keys.astype(np.int64)
        return keys[mask[keys]][:K]

    def save(self, path):
        self.index.save(str(path))

    def load(self, path):
        from usearch.index import Index

        self.index = Index.restore(str(path), view=True)
        return "mmap(view)"


class UsearchI8(Usearch):
    dtype = "i8"


class UsearchF16(Usearch):
    dtype = "f16"


CANDIDATES: dict[str, type[Candidate]] = {
    "exact": Exact,
    "exact_permitted": ExactPermitted,
    "faiss_hnsw": FaissHNSW,
    "faiss_hnsw_sq8": FaissHNSWSQ8,
    "faiss_hnsw_fp16": FaissHNSWFP16,
    "faiss_ivf_flat": FaissIVF,
    "faiss_ivf_sq8": FaissIVFSQ8,
    "hnswlib": Hnswlib,
    "usearch": Usearch,
    "usearch_f16": UsearchF16,
    "usearch_i8": UsearchI8,
}


# ------------------------------------------------------------------------------------------ measuring


def _mem() -> dict[str, float]:
    import psutil

    info = psutil.Process().memory_info()
    return {"rss": info.rss / 2**20, "file": info.shared / 2**20, "anon": (info.rss - info.shared) / 2**20}


def _delta(after: dict, before: dict) -> dict:
    return {f"{k}_mb": round(after[k] - before[k], 1) for k in after}


def _measure(cand: Candidate, folder: Path, n: int, n_q: int, params, sels=SELECTIVITIES) -> list[dict]:
    out = []
    for param in params:
        for s in sels:
            q_all = np.load(folder / f"q_{s}.npy")[:n_q]
            gt = np.load(folder / f"gt_{s}.npy")[:n_q]
            rows = _rows_of(np.load(folder / f"docs_{s}.npy"))
            allowed = np.zeros(n, dtype=bool)
            allowed[rows] = True
            lat, rec, leaks = [], [], 0
            for q, truth in zip(q_all, gt, strict=True):
                t0 = time.perf_counter()
                ids = cand.search(q, rows, n, param)
                lat.append((time.perf_counter() - t0) * 1000)
                truth = truth[truth >= 0]
                rec.append(len(set(ids.tolist()) & set(truth.tolist())) / len(truth))
                leaks += int((~allowed[ids]).sum())
            out.append(
                {
                    "param": param,
                    "selectivity": f"1/{s}",
                    "permitted_rows": len(rows),
                    "p50_ms": round(float(np.percentile(lat, 50)), 2),
                    "p95_ms": round(float(np.percentile(lat, 95)), 2),
                    "recall10": round(float(np.mean(rec)), 4),
                    "forbidden_returned": leaks,
                }
            )
            print(f"  {type(cand).__name__} {cand.param_name}={param} 1/{s}: {out[-1]}", file=sys.stderr, flush=True)
    return out


def _import_library(name: str) -> None:
    """Import the library before the first RSS reading, so that its own code is not counted as index memory."""
    lib = name.split("_")[0]
    if lib in ("faiss", "hnswlib", "usearch"):
        __import__(lib if lib != "usearch" else "usearch.index")


def worker_build(name: str, folder: Path, n: int, n_q: int, threads: int, index_dir: Path) -> dict:
    _import_library(name)
    cand = CANDIDATES[name](threads)
    x = np.load(folder / "x.npy", mmap_mode="r")
    gc.collect()
    m0 = _mem()
    t0 = time.perf_counter()
    cand.build(x)
    build_s = time.perf_counter() - t0
    m1 = _mem()
    result = {"candidate": name, "n": n, "build_s": round(build_s, 1), "build_mem": _delta(m1, m0)}
    if getattr(cand, "nlist", None):
        result["nlist"] = cand.nlist
    result["param_name"] = cand.param_name
    result["runs"] = _measure(cand, folder, n, n_q, cand.params)
    path = index_dir / f"{name}_{n}.idx"
    t0 = time.perf_counter()
    cand.save(path if name not in ("exact", "exact_permitted") else path.with_suffix(".npy"))
    result["save_s"] = round(time.perf_counter() - t0, 2)
    saved = path if path.exists() else path.with_suffix(".npy")
    result["file_mb"] = round(saved.stat().st_size / 2**20, 1)
    return result


def worker_load(name: str, folder: Path, n: int, n_q: int, index_dir: Path) -> dict:
    """A second worker: load the saved index and run a few queries; what does it add to RSS?"""
    _import_library(name)
    cand = CANDIDATES[name](1)
    path = index_dir / f"{name}_{n}.idx"
    if not path.exists():
        path = path.with_suffix(".npy")
    gc.collect()
    m0 = _mem()
    t0 = time.perf_counter()
    how = cand.load(path)
    load_s = time.perf_counter() - t0
    m1 = _mem()
    param = cand.params[len(cand.params) // 2]
    runs = _measure(cand, folder, n, min(n_q, 50), (param,), sels=(10,))
    m2 = _mem()
    return {
        "load_how": how,
        "load_s": round(load_s, 2),
        "load_mem": _delta(m1, m0),
        "after_queries_mem": _delta(m2, m0),
        "loaded_check": runs[0],
    }


def fallback_curve(folder: Path, n: int, n_q: int) -> list[dict]:
    """Exact scan over the permitted rows only, by permitted-set size: where should it take over from the ANN?"""
    x = np.array(np.load(folder / "x.npy", mmap_mode="r"))
    q_all = np.load(folder / "q_10.npy")[:n_q]
    rng = np.random.default_rng(1)
    cand, out = ExactPermitted(1), []
    cand.x = x
    for rows_wanted in (1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000):
        if rows_wanted > n // 2:
            break
        docs = np.sort(rng.choice(n // CHUNKS_PER_DOC, rows_wanted // CHUNKS_PER_DOC, replace=False))
        rows = _rows_of(docs)
        lat = []
        for q in q_all:
            t0 = time.perf_counter()
            cand.search(q, rows, n, None)
            lat.append((time.perf_counter() - t0) * 1000)
        out.append(
            {
                "permitted_rows": len(rows),
                "p50_ms": round(float(np.percentile(lat, 50)), 2),
                "p95_ms": round(float(np.percentile(lat, 95)), 2),
            }
        )
        print(f"  fallback {out[-1]}", file=sys.stderr, flush=True)
    return out


def _child(args: list[str], threads: int, timeout: float) -> dict | None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    try:
        proc = subprocess.run(
            [sys.executable, __file__, *args], check=False, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    sys.stderr.write(proc.stderr[-4000:])
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ report


def table(results: list[dict]) -> str:
    lines = [
        f"{'candidate':16} {'param':>20} {'build_s':>7} {'mem_MB':>7} {'load_s':>6} {'mmap':>4} "
        + " ".join(f"{'1/' + str(s) + ' p50/p95/rec':>24}" for s in SELECTIVITIES)
    ]
    for r in results:
        if "error" in r and "runs" not in r:
            lines.append(f"{r['candidate']:16} ERROR {r['error']}")
            continue
        load = r.get("load", {})
        load_txt = f"{load.get('load_s', '?'):>6} {'yes' if str(load.get('load_how')).startswith('mmap') else 'no':>4}"
        by_param: dict = {}
        for run in r["runs"]:
            by_param.setdefault(run["param"], {})[run["selectivity"]] = run
        for param, cells in by_param.items():
            row = f"{r['candidate']:16} {str(r['param_name']) + '=' + str(param) if param else '-':>20} "
            row += f"{r['build_s']:>7} {r['build_mem']['anon_mb']:>7.0f} {load_txt:>16} "
            for s in SELECTIVITIES:
                c = cells.get(f"1/{s}")
                row += f"{c['p50_ms']:>8.2f}/{c['p95_ms']:>7.2f}/{c['recall10']:.3f}" if c else " " * 24
            lines.append(row)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200, help="queries per selectivity (at most 400)")
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    ap.add_argument("--threads", type=int, default=2, help="build threads; search always uses one")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--data", choices=("manifold", "isotropic"), default="manifold")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/bench_scale_cache"))
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per candidate process")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--fallback-curve", action="store_true", help="only time the exact scan by permitted-set size")
    ap.add_argument("--worker", choices=("build", "load"), help=argparse.SUPPRESS)
    ap.add_argument("--name", help=argparse.SUPPRESS)
    args = ap.parse_args()
    folder = args.cache / f"n{args.n}_s{args.seed}_{args.data}"
    index_dir = args.cache / "indexes"
    if args.worker == "build":
        print(json.dumps(worker_build(args.name, folder, args.n, args.queries, args.threads, index_dir)))
        return
    if args.worker == "load":
        print(json.dumps(worker_load(args.name, folder, args.n, args.queries, index_dir)))
        return
    index_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    generate(args.n, args.seed, args.cache, args.data)
    print(f"data and ground truth: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    if args.fallback_curve:
        curve = fallback_curve(folder, args.n, args.queries)
        print("\n".join(f"{c['permitted_rows']:>8} rows: p50 {c['p50_ms']} ms, p95 {c['p95_ms']} ms" for c in curve))
        if args.out:
            _write(args, [{"candidate": "exact_permitted_by_size", "curve": curve}])
        return
    results = []
    common = ["--n", str(args.n), "--queries", str(args.queries), "--seed", str(args.seed), "--data", args.data]
    common += ["--cache", str(args.cache)]
    for name in args.candidates.split(","):
        print(f"== {name}", file=sys.stderr, flush=True)
        r = _child(["--worker", "build", "--name", name, "--threads", str(args.threads), *common], 1, args.timeout)
        r = {"candidate": name, **r}
        if "runs" in r:
            r["load"] = _child(["--worker", "load", "--name", name, *common], 1, args.timeout)
            for p in index_dir.glob(f"{name}_{args.n}.*"):
                p.unlink()
        results.append(r)
        if args.out:  # write as we go: a long run killed half-way still leaves its figures
            _write(args, results)
    print(table(results))


def _write(args, results) -> None:
    import platform

    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "n": args.n,
        "dim": DIM,
        "chunks_per_doc": CHUNKS_PER_DOC,
        "queries_per_selectivity": args.queries,
        "build_threads": args.threads,
        "search_threads": 1,
        "seed": args.seed,
        "data": args.data,
        "cpu_count": os.cpu_count(),
        "loadavg_at_write": os.getloadavg(),
        "python": platform.python_version(),
        "versions": _versions(),
    }
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("numpy", "faiss-cpu", "hnswlib", "usearch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


if __name__ == "__main__":
    main()
