"""Ingest files into the store: read, chunk, embed only what is new, upsert, then drop stale chunks."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ingest.chunking import Chunker, content_hash, document_id
from ingest.readers import SUPPORTED, read_document
from rag.embedding import Embedder
from rag.errors import DocumentError
from rag.settings import ChunkingSettings
from rag.store import ChromaStore


@dataclass
class FileResult:
    path: Path
    status: str  # added | updated | unchanged | failed
    chunks: int = 0
    embedded: int = 0
    tokens: int = 0
    error: str | None = None


@dataclass
class IngestReport:
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for f in self.files if f.status == status)

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def chunks_embedded(self) -> int:
        return sum(f.embedded for f in self.files)

    @property
    def tokens_embedded(self) -> int:
        return sum(f.tokens for f in self.files)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        rate = self.chunks_embedded / self.seconds if self.seconds else 0.0
        parts = [
            f"{len(self.files)} files: {self.count('added')} added, {self.count('updated')} updated, "
            f"{self.count('unchanged')} unchanged, {self.count('failed')} failed",
            f"{self.chunks_embedded} chunks embedded in {self.seconds:.1f}s ({rate:.1f} chunks/s)",
        ]
        if self.files and not self.chunks_embedded and not self.failed:
            parts.append("nothing new to embed: every file is already in the store")
        return "; ".join(parts)


ProgressCallback = Callable[[FileResult], None]


def discover(paths: Iterable[Path]) -> tuple[list[Path], list[FileResult]]:
    """Files to ingest under the given paths, plus failures for paths that cannot be ingested at all."""
    files: list[Path] = []
    problems: list[FileResult] = []
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                hidden = any(part.startswith(".") for part in child.relative_to(path).parts)
                if child.is_file() and not hidden and child.suffix.lower() in SUPPORTED:
                    files.append(child)
        elif path.is_file():
            files.append(path)
        else:
            problems.append(FileResult(path, "failed", error=f"{path}: no such file or folder"))
    return list(dict.fromkeys(files)), problems


class IngestService:
    """Incremental by content: an unchanged file is skipped before parsing, a changed one has its chunks replaced."""

    def __init__(self, embedder: Embedder, store: ChromaStore, chunking: ChunkingSettings) -> None:
        self.embedder = embedder
        self.store = store
        self.chunking = chunking
        self._chunker: Chunker | None = None

    @property
    def chunker(self) -> Chunker:
        if self._chunker is None:
            self._chunker = Chunker(self.embedder.tokenize, self.chunking.chunk_tokens, self.chunking.overlap_tokens)
        return self._chunker

    def ingest_paths(self, paths: Iterable[Path], progress: ProgressCallback | None = None) -> IngestReport:
        started = time.perf_counter()
        files, report_files = discover(paths)
        report = IngestReport(files=report_files)
        for path in files:
            result = self.ingest_file(path)
            report.files.append(result)
            if progress:
                progress(result)
        report.seconds = time.perf_counter() - started
        return report

    def ingest_file(self, path: Path) -> FileResult:
        try:
            return self._ingest_file(path)
        except DocumentError as exc:
            return FileResult(path, "failed", error=exc.message)
        except (OSError, ValueError, RuntimeError) as exc:  # one bad file must not stop the batch
            return FileResult(path, "failed", error=f"{path.name}: {type(exc).__name__}: {exc}")

    def _ingest_file(self, path: Path) -> FileResult:
        data = path.read_bytes()
        file_hash = content_hash(data)
        doc_id = document_id(path)
        stored = self.store.document_chunks(doc_id)
        if stored and all(meta.get("file_hash") == file_hash for meta in stored.values()):
            return FileResult(path, "unchanged", chunks=len(stored))
        records = self.chunker.chunk(
            read_document(path), doc_id=doc_id, source=str(path.resolve()), file_hash=file_hash
        )
        if not records:
            raise DocumentError(f"{path.name}: no text to index")
        present = self.store.existing_ids(r.id for r in records)
        # Chunks whose text did not change keep their vectors; only their metadata (file hash) is refreshed.
        new = [r for r in records if r.id not in present]
        vectors = self.embedder.embed_documents([r.embed_text for r in new])
        self.store.upsert(new, vectors)
        self.store.update_metadata([r for r in records if r.id in present])
        stale = sorted(set(stored) - {r.id for r in records})
        self.store.delete(stale)  # after the upsert: a crash in between leaves extra chunks, never missing ones
        tokens = sum(len(self.embedder.tokenize(r.embed_text)) for r in new)
        return FileResult(path, "updated" if stored else "added", chunks=len(records), embedded=len(new), tokens=tokens)
