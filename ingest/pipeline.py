"""Ingest files into the store: incremental by content, crash-safe, isolated from bad files, parse beside embed.

How a job runs:

1. Take the store's writer lock (a second writer fails at once) and finish any deletion a crash interrupted.
2. Hash every file; one whose registry row says ``indexed`` with the same hash is skipped without parsing.
3. Parse the rest in worker processes (time and memory limits per file) while this thread chunks and embeds
   what has already been parsed: chunks from many files are gathered, sorted by length and embedded in large
   batches, then written to Chroma in batches.
4. Per document: mark it ``indexing`` in the registry, write texts then vectors, drop chunks the new version
   no longer has, then mark it ``indexed`` with the new hash.

Chunk ids are the document id plus a hash of the chunk's content, so a rerun after ``kill -9`` at any point
recomputes the same ids, writes only what is missing and deletes whatever is left over: no duplicates, no
orphans.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ingest.chunking import Chunker, ChunkSpec, document_id
from ingest.readers import SUPPORTED, ReaderOptions
from ingest.workers import DEFAULT_PARSER, ParseOutcome, ParsePool
from rag.acl import AclMap, acl_metadata, document_tokens, normalize_tags
from rag.docstore import DocumentRecord
from rag.embedding import Embedder
from rag.errors import (
    DocumentError,
    FileTooLargeError,
    InvalidRequestError,
    NotFoundError,
    RagError,
    StoreError,
)
from rag.locking import WriterLock
from rag.schemas import ChunkRecord
from rag.settings import ChunkingSettings, IngestSettings, Settings
from rag.storage import disk_fault
from rag.store import ChromaStore

log = logging.getLogger(__name__)


@dataclass
class FileResult:
    path: Path
    status: str  # added | updated | unchanged | failed | removed
    chunks: int = 0
    embedded: int = 0
    tokens: int = 0
    error: str | None = None
    code: str | None = None
    doc_id: str | None = None


@dataclass
class IngestReport:
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    total: int = 0

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
            f"{self.count('unchanged')} unchanged, {self.count('removed')} removed, {self.count('failed')} failed",
            f"{self.chunks_embedded} chunks embedded in {self.seconds:.1f}s ({rate:.1f} chunks/s)",
        ]
        if self.files and not self.chunks_embedded and not self.failed and not self.count("removed"):
            parts.append("nothing new to embed: every file is already in the store")
        return "; ".join(parts)

    def as_dict(self) -> dict:
        return {
            "files": [
                {
                    "path": str(f.path),
                    "status": f.status,
                    "doc_id": f.doc_id,
                    "chunks": f.chunks,
                    "embedded": f.embedded,
                    "error": f.error,
                    "code": f.code,
                }
                for f in self.files
            ],
            "seconds": round(self.seconds, 3),
            "chunks_embedded": self.chunks_embedded,
            "tokens_embedded": self.tokens_embedded,
            "counts": {s: self.count(s) for s in ("added", "updated", "unchanged", "removed", "failed")},
        }


ProgressCallback = Callable[[FileResult], None]


def broken_link(path: Path) -> FileResult | None:
    """A failure for a symlink that loops or points nowhere; None for anything else. Listed, not skipped in
    silence: the admin meant that file to be read."""
    if not path.is_symlink():
        return None
    try:
        os.stat(path)
    except FileNotFoundError:
        error = f"{path.name}: the symlink points to a file that does not exist: fix or remove the link"
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            return None
        error = f"{path.name}: the symlink loops back on itself: point it at the real file or remove it"
    else:
        return None
    return FileResult(path, "failed", error=error, code="broken_link")


def discover(paths: Iterable[Path]) -> tuple[list[Path], list[FileResult]]:
    """Files to ingest under the given paths, plus failures for paths that cannot be ingested at all."""
    files: list[Path] = []
    problems: list[FileResult] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                hidden = any(part.startswith(".") for part in child.relative_to(path).parts)
                if hidden or child.suffix.lower() not in SUPPORTED:
                    continue
                if child.is_file():
                    files.append(child.resolve())
                elif (problem := broken_link(child)) is not None:
                    problems.append(problem)
        elif path.is_file():
            files.append(path.resolve())
        else:
            problem = broken_link(path)
            problems.append(
                problem or FileResult(path, "failed", error=f"{path}: no such file or folder", code="not_found")
            )
    return list(dict.fromkeys(files)), problems


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def reader_options(settings: IngestSettings) -> ReaderOptions:
    return ReaderOptions(
        ocr=settings.ocr,
        ocr_languages=settings.ocr_languages,
        max_unzipped_mb=settings.max_unzipped_mb,
        max_zip_ratio=settings.max_zip_ratio,
    )


@dataclass
class _Candidate:
    path: Path
    doc_id: str
    file_hash: str
    size: int
    known: DocumentRecord | None
    acl: list[str]  # the ACL tokens this version gets
    tags: list[str]


@dataclass
class _Pending:
    """A document whose new chunks are waiting in the embedding buffer."""

    candidate: _Candidate
    title: str
    doc_type: str
    records: list[ChunkRecord]
    kept: list[ChunkRecord]
    stale: list[str]
    result: FileResult
    remaining: int


class IngestService:
    """Incremental by content: an unchanged file is skipped before parsing, a changed one has its chunks replaced."""

    def __init__(
        self,
        embedder: Embedder,
        store: ChromaStore,
        chunking: ChunkingSettings,
        ingest: IngestSettings | None = None,
        *,
        parser: str = DEFAULT_PARSER,
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.chunking = chunking
        self.settings = ingest or IngestSettings()
        self.parser = parser
        self.data_dir = store.path.parent
        self._chunker: Chunker | None = None
        self._pool: ParsePool | None = None

    @classmethod
    def from_settings(cls, settings: Settings, embedder: Embedder, store: ChromaStore) -> IngestService:
        return cls(embedder, store, settings.chunking, settings.ingest)

    @property
    def registry(self):  # noqa: ANN201 - DocStore
        return self.store.docstore

    @property
    def pool(self) -> ParsePool:
        if self._pool is None:
            self._pool = ParsePool(
                workers=self.settings.parse_workers,
                timeout_s=self.settings.parse_timeout_s,
                memory_mb=self.settings.parse_memory_mb,
                options=reader_options(self.settings),
                parser=self.parser,
                log_path=self.data_dir / "logs" / "parse-workers.log",
            )
        return self._pool

    def warm(self) -> None:
        """Start the parse workers now, e.g. while the embedding model loads."""
        self.pool.warm()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    @property
    def chunker(self) -> Chunker:
        if self._chunker is None:
            self._chunker = Chunker(self.embedder.tokenize, self.chunking.chunk_tokens, self.chunking.overlap_tokens)
        return self._chunker

    def writer_lock(self, purpose: str = "ingest") -> WriterLock:
        return WriterLock(self.data_dir, purpose)

    def check_embedder(self) -> None:
        """Refuse to mix vectors of two different embedders in one collection; the first ingest claims the store."""
        self.store.check_embedder(self.embedder, claim=True)

    # -- jobs -------------------------------------------------------------------------------------------------

    def ingest_paths(
        self,
        paths: Iterable[Path],
        progress: ProgressCallback | None = None,
        *,
        acl: list[str] | None = None,
        acl_map: AclMap | None = None,
        tags: list[str] | None = None,
        prune: bool = False,
        cancel: threading.Event | None = None,
        on_total: Callable[[int], None] | None = None,
        roots: Sequence[Path] | None = None,
    ) -> IngestReport:
        """Ingest files and folders. ``roots``: the folders sidecar files must resolve into (the admin API's
        ``server.admin_paths``, or an upload's folder); None trusts every path, as the CLI does."""
        paths = [Path(p) for p in paths]
        try:
            with self.writer_lock() as lock:
                if lock.previous_holder_died:
                    self.repair_index()
                labels = normalize_tags(tags) if tags is not None else None
                return self._run(paths, progress, acl, acl_map, labels, prune, cancel, on_total, roots)
        except Exception as exc:
            # A full or read-only disk stops the whole run (every later write would fail too): one line with
            # the fix. What was committed stays; documents left `indexing` are redone by the next run.
            ours = isinstance(exc, RagError) and not isinstance(exc, StoreError)  # already says what to do
            fault = None if ours else disk_fault(exc, self.data_dir)
            if fault is None:
                raise
            log.error("ingest stopped: %s", fault.message)
            raise fault from exc

    def repair_index(self) -> list[str]:
        """After an unclean stop: put back vectors that Chroma's index lost but its records kept."""
        missing = sorted(self.store.missing_from_index())
        if missing:
            log.warning(
                "the last writer died; %d chunk vectors were missing from the index and are rewritten", len(missing)
            )
            self.store.reindex(missing)
        return missing

    def _run(
        self,
        paths: list[Path],
        progress: ProgressCallback | None,
        acl: list[str] | None,
        acl_map: AclMap | None,
        tags: list[str] | None,
        prune: bool,
        cancel: threading.Event | None,
        on_total: Callable[[int], None] | None,
        roots: Sequence[Path] | None,
    ) -> IngestReport:
        started = time.perf_counter()
        self.check_embedder()
        self.recover()
        files, problems = discover(paths)
        report = IngestReport(total=len(files) + len(problems))
        if on_total:
            on_total(report.total)

        def done(result: FileResult) -> None:
            report.files.append(result)
            if progress:
                progress(result)

        for problem in problems:
            done(problem)
        candidates: list[_Candidate] = []
        for path in files:
            candidate, result = self._triage(path, acl, acl_map, tags, roots)
            if candidate is not None:
                candidates.append(candidate)
            else:
                done(result)
        by_path = {c.path: c for c in candidates}
        buffer: list[tuple[ChunkRecord, _Pending]] = []
        pool = self.pool
        pool.chunk_spec = self.chunk_spec()

        def chunk_args(path: Path) -> dict:
            candidate = by_path[path]
            return {
                "doc_id": candidate.doc_id,
                "source": str(candidate.path),
                "file_hash": candidate.file_hash,
                "extra_metadata": acl_metadata(candidate.acl),
            }

        for outcome in pool.parse([c.path for c in candidates], chunk_args):
            if cancel is not None and cancel.is_set():
                break
            candidate = by_path[outcome.path]
            if outcome.error is not None:
                done(self._fail(candidate, outcome.error))
                continue
            pending = self._prepare(candidate, outcome)
            if isinstance(pending, FileResult):
                done(pending)
                continue
            buffer.extend((record, pending) for record in pending.records)
            if pending.remaining == 0:
                done(self._finalize(pending))
            # Embed when the batch is full, or when nothing else is parsed yet: the embedder never waits idle.
            if len(buffer) >= self.settings.embed_batch or (buffer and pool.ready() == 0):
                for result in self._flush(buffer):
                    done(result)
                buffer = []
        for result in self._flush(buffer):
            done(result)
        if prune and not (cancel is not None and cancel.is_set()):
            for result in self._prune(paths):
                done(result)
        self.store.purge_deleted()
        report.seconds = time.perf_counter() - started
        return report

    def _triage(
        self,
        path: Path,
        acl: list[str] | None,
        acl_map: AclMap | None,
        tags: list[str] | None,
        roots: Sequence[Path] | None = None,
    ) -> tuple[_Candidate | None, FileResult]:
        doc_id = document_id(path)
        try:
            size = path.stat().st_size
            limit = self.settings.max_file_mb * 1024 * 1024
            if size > limit:
                raise FileTooLargeError(
                    f"{path.name}: {size / 1048576:.1f} MB is over the {self.settings.max_file_mb:g} MB limit: "
                    "split the file or raise ingest.max_file_mb"
                )
            file_hash = file_sha256(path)
        except DocumentError as exc:
            self.registry.record_failure(doc_id, str(path), exc.message)
            return None, FileResult(path, "failed", error=exc.message, code=exc.code, doc_id=doc_id)
        except OSError as exc:
            message = f"{path.name}: cannot read the file ({exc.strerror or exc}): check its permissions"
            return None, FileResult(path, "failed", error=message, code="unreadable", doc_id=doc_id)
        known = self.registry.document(doc_id)
        try:
            recorded = known.acl if known and known.content_hash else None
            tokens = document_tokens(path, acl, acl_map, recorded, self.settings.default_access, roots)
        except InvalidRequestError as exc:  # a bad sidecar file: this document fails, nothing is widened
            self.registry.record_failure(doc_id, str(path), exc.message)
            return None, FileResult(path, "failed", error=exc.message, code="acl_invalid", doc_id=doc_id)
        labels = tags if tags is not None else (known.tags if known else [])
        same = known is not None and known.acl == tokens and known.tags == labels
        if known and known.status == "indexed" and known.content_hash == file_hash and same:
            return None, FileResult(path, "unchanged", chunks=known.chunk_count, doc_id=doc_id)
        return _Candidate(path, doc_id, file_hash, size, known, tokens, labels), FileResult(path, "pending")

    def _fail(self, candidate: _Candidate, error: DocumentError) -> FileResult:
        self.registry.record_failure(candidate.doc_id, str(candidate.path), error.message)
        return FileResult(candidate.path, "failed", error=error.message, code=error.code, doc_id=candidate.doc_id)

    def chunk_spec(self) -> ChunkSpec | None:
        """Chunk in the parse workers when the embedder's tokenizer is a file they can load."""
        tokenizer_file = getattr(self.embedder, "tokenizer_file", None)
        if tokenizer_file is None:
            return None
        return ChunkSpec(str(tokenizer_file), self.chunking.chunk_tokens, self.chunking.overlap_tokens)

    def _prepare(self, candidate: _Candidate, outcome: ParseOutcome) -> _Pending | FileResult:
        document = outcome.document
        records, counts = outcome.records, outcome.token_counts
        if records is None:  # chunk here: the embedder's tokenizer could not travel to the workers
            try:
                records = self.chunker.chunk(
                    document,
                    doc_id=candidate.doc_id,
                    source=str(candidate.path),
                    file_hash=candidate.file_hash,
                    extra_metadata=acl_metadata(candidate.acl),
                )
            except (ValueError, RuntimeError) as exc:
                return self._fail(candidate, DocumentError(f"{candidate.path.name}: cannot split the text: {exc}"))
            counts = [len(self.embedder.tokenize(r.embed_text)) for r in records]
        if not records:
            return self._fail(candidate, DocumentError(f"{candidate.path.name}: no text to index"))
        self.registry.begin(candidate.doc_id, str(candidate.path), candidate.acl)
        if candidate.known is not None:  # a former version, or a crash, may have left chunks behind
            in_chroma = set(self.store.document_chunks(candidate.doc_id))
            everywhere = in_chroma | self.registry.chunk_ids(candidate.doc_id)
        else:
            in_chroma, everywhere = set(), set()
        wanted = {r.id for r in records}
        new = [r for r in records if r.id not in in_chroma]
        kept = [r for r in records if r.id in in_chroma]
        status = "updated" if candidate.known is not None and candidate.known.content_hash else "added"
        result = FileResult(candidate.path, status, chunks=len(records), embedded=len(new), doc_id=candidate.doc_id)
        result.tokens = sum(n for r, n in zip(records, counts, strict=True) if r.id not in in_chroma)
        return _Pending(
            candidate,
            document.title,
            document.doc_type,
            records=new,
            kept=kept,
            stale=sorted(everywhere - wanted),
            result=result,
            remaining=len(new),
        )

    def _flush(self, buffer: list[tuple[ChunkRecord, _Pending]]) -> list[FileResult]:
        """Embed the gathered chunks longest first (little padding), write them, finish completed documents."""
        if not buffer:
            return []
        ordered = sorted(buffer, key=lambda item: len(item[0].embed_text), reverse=True)
        vectors = self.embedder.embed_documents([record.embed_text for record, _ in ordered])
        self.store.upsert([record for record, _ in ordered], vectors)
        finished: list[FileResult] = []
        for _, pending in ordered:
            pending.remaining -= 1
            if pending.remaining == 0:
                finished.append(self._finalize(pending))
        return finished

    def _finalize(self, pending: _Pending) -> FileResult:
        candidate = pending.candidate
        if pending.kept:
            self.store.docstore.put_chunks([(r.id, candidate.doc_id, r.text, r.embed_text) for r in pending.kept])
            self.store.update_metadata(pending.kept)
        self.store.delete(pending.stale)  # after the new chunks are in: a crash leaves extra chunks, never missing
        self.registry.commit(
            candidate.doc_id,
            path=str(candidate.path),
            title=pending.title,
            doc_type=pending.doc_type,
            content_hash=candidate.file_hash,
            size_bytes=candidate.size,
            chunk_count=len(pending.records) + len(pending.kept),
            acl=candidate.acl,
            tags=candidate.tags,
        )
        pending.records = []  # release the texts
        return pending.result

    # -- documents --------------------------------------------------------------------------------------------

    def recover(self) -> None:
        """Finish deletions that a crash interrupted."""
        for record in self.registry.documents("deleting"):
            self._remove(record.doc_id)

    def _remove(self, doc_id: str) -> None:
        self.registry.mark_deleting(doc_id)
        self.store.delete(sorted(self.store.document_chunk_ids(doc_id)))
        self.registry.forget(doc_id)

    def delete_document(self, doc_id: str) -> DocumentRecord:
        """Remove a document's vectors, metadata and text from the store, and its registry row."""
        with self.writer_lock("delete"):
            record = self.registry.document(doc_id)
            if record is None:
                raise NotFoundError(f"no document with id {doc_id}: `rag docs list` shows the ids")
            self._remove(doc_id)
            self.store.purge_deleted()
            return record

    def _prune(self, roots: list[Path]) -> list[FileResult]:
        """Remove documents under the given folders whose files are gone."""
        folders = [r.resolve() for r in roots if r.is_dir() or not r.exists()]
        removed: list[FileResult] = []
        for record in self.registry.documents():
            path = Path(record.path)
            if path.exists() or not any(path.is_relative_to(folder) for folder in folders):
                continue
            self._remove(record.doc_id)
            removed.append(FileResult(path, "removed", chunks=record.chunk_count, doc_id=record.doc_id))
        return removed
