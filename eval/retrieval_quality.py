"""Retrieval quality per embedding backend: hit@k and MRR on the sample Q&A set and on a larger synthetic set.

Run: ``python -m eval.retrieval_quality [--dataset eval/datasets/sample_smoke.jsonl] [--backends torch,onnx-int8]
[--k 5] [--corpus /usr/share/doc/git-doc] [--limit-files 200]``.

For each backend, the sample corpus and the benchmark corpus are each ingested into a fresh temporary data dir; each
query is embedded (``embed_query``) and the top-k chunks are read from the store. A query is a hit when a gold file
name is among the basenames of the top-k chunks' ``source`` metadata; MRR uses the rank of the first such chunk.

* sample: the answerable questions of the dataset (a couple of dozen: one question is about 5 points);
* synthetic: built deterministically from the benchmark corpus' headings, gold = the page they come from
  (a few hundred queries, so a point of hit@k is a handful of queries):
  - heading: up to ``--headings-per-page`` headings per page that occur in no other page and have at least two
    words (e.g. "DETACHED HEAD" -> git-checkout.html), asked as they are, without the page title;
  - name: for manual pages, the text under the NAME heading without the command name (e.g. "Apply a series of
    patches from a mailbox" -> git-am.html).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rag  # noqa: F401  - offline switches first
from eval import dataset as eval_dataset
from eval import metrics as m
from eval.bench_ingest import (
    DEFAULT_CORPUS,
    BackendUnavailable,
    build_backend_embedder,
    corpus_files,
    corpus_problem,
    load_embedder,
    make_ingest_service,
    make_settings,
    quiet_progress_bars,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLE_CORPUS = REPO / "ingest" / "sample_corpus"
DEFAULT_DATASET = REPO / "eval" / "datasets" / "sample_smoke.jsonl"
DEFAULT_BACKENDS = ("torch", "onnx-int8")
MAX_HEADING_WORDS = 12
_NAME_PREFIX = re.compile(r"^\s*\S+(?:\s*,\s*\S+)*\s+-{1,2}\s+")


@dataclass(frozen=True)
class Query:
    id: str
    question: str
    gold_sources: tuple[str, ...]
    kind: str = "dataset"


@dataclass
class QueryResult:
    id: str
    question: str
    gold_sources: tuple[str, ...]
    kind: str
    retrieved_sources: list[str]  # file names of the top-k chunks, best first
    scores: list[float]

    @property
    def labels(self) -> list[str | None]:
        """The gold file each retrieved chunk comes from (None: none), as ``eval.metrics`` scores rankings."""
        return [m.gold_label(source, None, self.gold_sources) for source in self.retrieved_sources]

    @property
    def rank(self) -> int | None:
        """1-based rank of the first chunk from a gold file, None when not in the top k."""
        return next((i for i, label in enumerate(self.labels, start=1) if label is not None), None)

    @property
    def hit(self) -> bool:
        return self.rank is not None

    @property
    def reciprocal_rank(self) -> float:
        return m.reciprocal_rank(self.labels, self.gold_sources)


@dataclass
class QualityResult:
    name: str
    backend: str
    k: int
    results: list[QueryResult] = field(default_factory=list)
    ingest_seconds: float = 0.0
    chunks: int = 0

    def subset(self, kind: str) -> QualityResult:
        return QualityResult(f"{self.name}/{kind}", self.backend, self.k, [r for r in self.results if r.kind == kind])

    @property
    def kinds(self) -> list[str]:
        return list(dict.fromkeys(r.kind for r in self.results))

    @property
    def n(self) -> int:
        return len(self.results)

    @property
    def hit_at_k(self) -> float:
        """Mean hit@k (``eval.metrics``): NaN over no queries, as `rag eval` reports it."""
        return m.mean(m.hit_at_k(r.labels, r.gold_sources, self.k) for r in self.results)

    @property
    def mrr(self) -> float:
        return m.mean(r.reciprocal_rank for r in self.results)


# --------------------------------------------------------------------------------------------------------------
# Query sets


def load_dataset(path: Path) -> list[Query]:
    """The answerable questions of a JSONL eval set (``eval.dataset``), gold sources as file names."""
    queries = []
    for item in eval_dataset.load_dataset(path):
        if not item.answerable:
            continue
        gold = tuple(Path(g).name for g in item.gold_sources)
        if not gold:
            raise ValueError(f"{path}: answerable question {item.id} has no gold_sources")
        queries.append(Query(item.id, item.question, gold))
    return queries


def _headings(doc: Any) -> list[str]:
    return list(dict.fromkeys(s.heading[-1].strip() for s in doc.sections if s.heading and s.heading[-1].strip()))


def name_summary(text: str) -> str:
    """``git-am - Apply a series of patches`` -> ``Apply a series of patches``."""
    return _NAME_PREFIX.sub("", " ".join(text.split()), count=1).strip()


def synthetic_queries(
    files: Sequence[Path], headings_per_page: int = 2, read: Callable[[Path], Any] | None = None
) -> list[Query]:
    """Deterministic queries from each page's headings; the gold source is the page itself."""
    if read is None:
        from ingest.readers import read_document as read
    parsed = []
    for path in files:
        try:
            parsed.append((path, read(path)))
        except Exception:  # noqa: BLE001 - a page the readers refuse is not ingested either
            continue
    frequency = Counter(h.casefold() for _, doc in parsed for h in {h.casefold() for h in _headings(doc)})
    queries: list[Query] = []
    for path, doc in parsed:
        chosen = [
            h
            for h in _headings(doc)
            if frequency[h.casefold()] == 1
            and 2 <= len(h.split()) <= MAX_HEADING_WORDS
            and h.casefold() != doc.title.casefold()
        ][:headings_per_page]
        for number, heading in enumerate(chosen, start=1):
            queries.append(Query(f"{path.stem}#h{number}", heading, (path.name,), "heading"))
        name = next((s.text for s in doc.sections if s.heading and s.heading[-1].strip() == "NAME"), "")
        summary = name_summary(name)
        if len(summary.split()) >= 2:
            queries.append(Query(f"{path.stem}#name", summary, (path.name,), "name"))
    return queries


# --------------------------------------------------------------------------------------------------------------
# Ingest and evaluate


@dataclass
class Indexed:
    embedder: Any
    store: Any
    seconds: float
    chunks: int
    files: int = 0
    note: str = ""


def ingest_for_eval(
    paths: Sequence[Path],
    data_dir: Path,
    backend: str,
    chunk_tokens: int | None = None,
    overlap_tokens: int | None = None,
    embedder: Any | None = None,
) -> Indexed:
    """Ingest ``paths`` into a fresh store under ``data_dir`` with ``backend`` (or a loaded ``embedder``)."""
    from rag.container import build_store
    from rag.ivf_index import IvfIndex

    settings = make_settings(data_dir, backend, chunk_tokens, overlap_tokens)
    note = ""
    if embedder is None:
        embedder, note = build_backend_embedder(settings)
        load_embedder(embedder, backend)
    store = build_store(settings)
    service = make_ingest_service(settings, embedder, store)
    started = time.perf_counter()
    report = service.ingest_paths(list(paths), acl=["public"])  # searched below without an identity
    seconds = time.perf_counter() - started
    if not report.chunks_embedded:
        raise RuntimeError(f"{backend}: nothing was indexed: {report.summary()}")
    if isinstance(index := store.index, IvfIndex) and index.trained:  # forced on (retrieval.ivf_min_rows below
        index.retrain()  # the set's size): trained on the whole set, as a store is after its next save
    return Indexed(embedder, store, seconds, store.count(), len(report.files), note)


def evaluate(
    indexed: Indexed, queries: Sequence[Query], k: int, name: str, backend: str, mode: str = "dense"
) -> QualityResult:
    """Top-k through the product's retriever in ``mode``, as a public caller: dense, keyword or hybrid, or
    hybrid/FUSION for one fusion method (hybrid/rrf, hybrid/dbsf); plain hybrid uses the product's default."""
    from rag.retrieval import Retriever
    from rag.settings import RetrievalSettings

    mode, _, fusion = mode.partition("/")
    options = {"fusion": fusion} if fusion else {}
    retriever = Retriever(indexed.embedder, indexed.store, RetrievalSettings(mode=mode, top_k=k, **options))
    result = QualityResult(name, backend, k, ingest_seconds=indexed.seconds, chunks=indexed.chunks)
    for query in queries:
        chunks = retriever.retrieve(query.question, k)
        sources = [Path(str(c.metadata.get("source", ""))).name for c in chunks]
        scores = [c.score for c in chunks]
        result.results.append(QueryResult(query.id, query.question, query.gold_sources, query.kind, sources, scores))
    return result


def evaluate_backend(
    backend: str,
    sets: dict[str, tuple[Sequence[Path], Sequence[Query]]],
    k: int,
    chunk_tokens: int | None = None,
    overlap_tokens: int | None = None,
    log: Callable[[str], None] = print,
    modes: Sequence[str] = ("dense",),
) -> dict[str, dict[str, QualityResult]]:
    """Each named set is (files to ingest, queries); each gets its own fresh store, all share one embedder.
    Returns variant -> set -> result, the variant being the backend, or ``backend:mode`` for several modes."""
    variants = {mode: backend if len(modes) == 1 else f"{backend}:{mode}" for mode in modes}
    out: dict[str, dict[str, QualityResult]] = {v: {} for v in variants.values()}
    embedder = None
    with tempfile.TemporaryDirectory(prefix=f"retrieval-{backend}-") as tmp:
        for name, (files, queries) in sets.items():
            indexed = ingest_for_eval(files, Path(tmp) / name, backend, chunk_tokens, overlap_tokens, embedder)
            embedder = indexed.embedder
            if indexed.note:
                log(f"  {backend}: {indexed.note}")
            for mode, variant in variants.items():
                r = out[variant][name] = evaluate(indexed, queries, k, name, backend, mode)
                log(
                    f"  {variant:<18} {name:<10} {indexed.files:4d} files -> {indexed.chunks:,} chunks in "
                    f"{indexed.seconds:.1f}s; hit@{k} {r.hit_at_k:.3f}, MRR {r.mrr:.3f} over {r.n} queries"
                )
            indexed.store.close()
    return out


# --------------------------------------------------------------------------------------------------------------
# Report


def _rows(results: dict[str, dict[str, QualityResult]]) -> list[tuple[str, dict[str, QualityResult]]]:
    """(row label, backend -> result) for each set, and each query kind of sets with more than one kind."""
    names = list(dict.fromkeys(n for per in results.values() for n in per))
    rows = []
    for name in names:
        per_backend = {b: per[name] for b, per in results.items() if name in per}
        rows.append((name, per_backend))
        kinds = next(iter(per_backend.values())).kinds
        if len(kinds) > 1:
            for kind in kinds:
                rows.append((f"  {name}/{kind}", {b: r.subset(kind) for b, r in per_backend.items()}))
    return rows


def paired(a: QualityResult, b: QualityResult) -> tuple[int, int, int, int]:
    """Over the same queries: (hits only ``a`` has, hits only ``b`` has, queries whose gold rank is better in
    ``a``, queries whose gold rank is better in ``b``)."""
    theirs = {r.id: r for r in b.results}
    a_only = b_only = a_better = b_better = 0
    for mine in a.results:
        other = theirs.get(mine.id)
        if other is None:
            continue
        a_only += mine.hit and not other.hit
        b_only += other.hit and not mine.hit
        a_better += mine.reciprocal_rank > other.reciprocal_rank
        b_better += other.reciprocal_rank > mine.reciprocal_rank
    return a_only, b_only, a_better, b_better


def table(results: dict[str, dict[str, QualityResult]], backends: Sequence[str], k: int) -> list[str]:
    """One column pair per variant; with several, the last one is compared with the first (the baseline): hit@k
    difference in points, MRR difference, and per query, hits and better gold ranks each side has."""
    ran = [b for b in backends if b in results]
    prefix = ran[0].split(":")[0] + ":" if ran and all(b.startswith(ran[0].split(":")[0] + ":") for b in ran) else ""
    label = {b: b.removeprefix(prefix) for b in ran}
    head = f"{'set':<22} {'queries':>7}"
    for b in ran:
        head += f"  {label[b] + f' hit@{k}':>16} {label[b] + ' MRR':>14}"
    pair = len(ran) >= 2
    if pair:
        a, b = ran[-1], ran[0]
        head += f"  {'hit pts':>8} {'MRR diff':>8}  {'hits only ' + label[a] + '/' + label[b]:>22}"
        head += f"  {'better rank ' + label[a] + '/' + label[b]:>24}"
    lines = ([f"(variants of {prefix[:-1]}; the last is compared with the first)"] if prefix and pair else []) + [
        head,
        "-" * len(head),
    ]
    for row_label, per in _rows(results):
        n = next(iter(per.values())).n
        line = f"{row_label:<22} {n:>7}"
        for backend in ran:
            r = per.get(backend)
            line += f"  {r.hit_at_k:>16.3f} {r.mrr:>14.3f}" if r else f"  {'n/a':>16} {'n/a':>14}"
        if pair and ran[0] in per and ran[-1] in per:
            cand, base = per[ran[-1]], per[ran[0]]
            only_c, only_b, better_c, better_b = paired(cand, base)
            line += f"  {100 * (cand.hit_at_k - base.hit_at_k):>+8.1f} {cand.mrr - base.mrr:>+8.3f}"
            line += f"  {f'{only_c}/{only_b}':>22}  {f'{better_c}/{better_b}':>24}"
        lines.append(line)
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--sample-corpus", type=Path, default=SAMPLE_CORPUS)
    parser.add_argument("--backends", default=",".join(DEFAULT_BACKENDS), help="comma separated: torch,onnx-int8")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument(
        "--modes",
        default="dense",
        help="comma separated retrieval modes to compare: dense,hybrid,keyword, or hybrid/rrf and hybrid/dbsf",
    )
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="benchmark corpus for the synthetic set")
    parser.add_argument("--limit-files", type=int, default=200, help="first N files, sorted (0: all)")
    parser.add_argument("--headings-per-page", type=int, default=2)
    parser.add_argument("--chunk-tokens", type=int, default=None, help="default: the product's setting")
    parser.add_argument("--overlap", type=int, default=None, help="default: the product's setting")
    parser.add_argument("--skip-synthetic", action="store_true", help="only the sample dataset")
    parser.add_argument("--show-misses", action="store_true", help="print every missed query per backend")
    args = parser.parse_args(argv)
    quiet_progress_bars()

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    sets: dict[str, tuple[Sequence[Path], Sequence[Query]]] = {
        "sample": ([args.sample_corpus], load_dataset(args.dataset))
    }
    if not args.skip_synthetic:
        problem = corpus_problem(args.corpus)
        if problem:
            print(f"error: {problem} (or pass --skip-synthetic)", file=sys.stderr)
            return 2
        files = corpus_files(args.corpus, args.limit_files or None)
        sets["synthetic"] = (files, synthetic_queries(files, args.headings_per_page))
    settings = make_settings(Path("unused"), "torch", args.chunk_tokens, args.overlap)
    print(
        f"retrieval_quality: k={args.k}, chunk {settings.chunking.chunk_tokens} tokens, overlap "
        f"{settings.chunking.overlap_tokens}; "
        + "; ".join(f"{name}: {len(q)} queries" for name, (_, q) in sets.items())
    )
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    results: dict[str, dict[str, QualityResult]] = {}
    for backend in backends:
        try:
            results.update(evaluate_backend(backend, sets, args.k, args.chunk_tokens, args.overlap, modes=modes))
        except BackendUnavailable as exc:
            print(f"  {backend}: skipped: {exc}")
    if not results:
        print("error: no backend could run", file=sys.stderr)
        return 1
    print()
    for line in table(results, list(results), args.k):
        print(line)
    if args.show_misses:
        for backend, per in results.items():
            for name, result in per.items():
                for r in result.results:
                    if not r.hit:
                        print(f"miss {backend} {name} {r.id}: {r.question!r} -> {r.retrieved_sources}")
    ran = {v.split(":")[0] for v in results}
    return 0 if all(b in ran for b in backends) else 1


if __name__ == "__main__":
    sys.exit(main())
