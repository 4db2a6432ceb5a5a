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

This module runs the steps in order; finding and hashing files is :mod:`ingest.discovery`, the skip decision
:mod:`ingest.triage`, embedding and writing :mod:`ingest.indexing`, and the report :mod:`ingest.report`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ingest.chunking import ChunkSpec
from ingest.discovery import discover
from ingest.indexing import DocumentWriter, EmbedBuffer
from ingest.readers import ReaderOptions
from ingest.report import FileResult, IngestReport, ProgressCallback
from ingest.triage import Candidate, triage
from ingest.workers import DEFAULT_PARSER, ParsePool
from rag.acl import AclMap, normalize_tags
from rag.docstore import DocumentRecord
from rag.embedding import Embedder
from rag.errors import NotFoundError, RagError, StoreError
from rag.locking import WriterLock
from rag.settings import ChunkingSettings, IngestSettings
from rag.storage import disk_fault
from rag.store import ChromaStore

log = logging.getLogger(__name__)


def reader_options(settings: IngestSettings) -> ReaderOptions:
    return ReaderOptions(
        ocr=settings.ocr,
        ocr_languages=settings.ocr_languages,
        max_unzipped_mb=settings.max_unzipped_mb,
        max_zip_ratio=settings.max_zip_ratio,
    )


@dataclass
class _Options:
    """What one ``ingest_paths`` call asked for, beyond the paths."""

    acl: list[str] | None
    acl_map: AclMap | None
    tags: list[str] | None
    prune: bool
    roots: Sequence[Path] | None


@dataclass
class _Run:
    """One run's report, filled in file by file and passed on to the caller's progress callback as it grows."""

    report: IngestReport
    progress: ProgressCallback | None
    cancel: threading.Event | None

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def done(self, *results: FileResult) -> None:
        for result in results:
            self.report.files.append(result)
            if self.progress:
                self.progress(result)


class IngestService:
    """Incremental by content: an unchanged file is skipped before parsing, a changed one has its chunks replaced."""

    def __init__(
        self,
        embedder: Embedder,
        store: ChromaStore,
        chunking: ChunkingSettings,
        ingest: IngestSettings,
        *,
        parser: str = DEFAULT_PARSER,
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.chunking = chunking
        self.settings = ingest
        self.parser = parser
        self.data_dir = store.path.parent
        self.writer = DocumentWriter(embedder, store, chunking)
        self._pool: ParsePool | None = None

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

    def writer_lock(self, purpose: str = "ingest") -> WriterLock:
        return WriterLock(self.data_dir, purpose)

    def check_embedder(self) -> None:
        """Refuse to mix vectors of two different embedders in one collection; the first ingest claims the store."""
        self.store.check_embedder(self.embedder, claim=True)

    def chunk_spec(self) -> ChunkSpec | None:
        """Chunk in the parse workers when the embedder's tokenizer is a file they can load."""
        tokenizer_file = getattr(self.embedder, "tokenizer_file", None)
        if tokenizer_file is None:
            return None
        return ChunkSpec(str(tokenizer_file), self.chunking.chunk_tokens, self.chunking.overlap_tokens)

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
                options = _Options(acl, acl_map, labels, prune, roots)
                return self._run(paths, options, _Run(IngestReport(), progress, cancel), on_total)
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
        self, paths: list[Path], options: _Options, run: _Run, on_total: Callable[[int], None] | None
    ) -> IngestReport:
        """Triage every file, parse and embed the candidates, prune what is gone, and time it all."""
        started = time.perf_counter()
        self.check_embedder()
        self.recover()
        candidates = self._triage(paths, options, run, on_total)
        self._parse_and_store(candidates, run)
        if options.prune and not run.cancelled:
            run.done(*self._prune(paths))
        self.store.purge_deleted()
        run.report.seconds = time.perf_counter() - started
        return run.report

    def _triage(
        self, paths: list[Path], options: _Options, run: _Run, on_total: Callable[[int], None] | None
    ) -> list[Candidate]:
        """Find the files, report the total, and settle those that need no parsing (unchanged or failed)."""
        files, problems = discover(paths)
        run.report.total = len(files) + len(problems)
        if on_total:
            on_total(run.report.total)
        run.done(*problems)
        candidates: list[Candidate] = []
        for path in files:
            candidate, result = triage(
                path, self.registry, self.settings, options.acl, options.acl_map, options.tags, options.roots
            )
            if candidate is not None:
                candidates.append(candidate)
            else:
                run.done(result)
        return candidates

    def _parse_and_store(self, candidates: list[Candidate], run: _Run) -> None:
        """Parse in the workers while this thread embeds: chunks gather in a buffer that is embedded and written
        when full, or when nothing else is parsed yet, so the embedder never waits idle."""
        by_path = {c.path: c for c in candidates}
        buffer: EmbedBuffer = []
        pool = self.pool
        pool.chunk_spec = self.chunk_spec()
        for outcome in pool.parse([c.path for c in candidates], lambda path: by_path[path].chunk_args()):
            if run.cancelled:
                break
            candidate = by_path[outcome.path]
            if outcome.error is not None:
                run.done(self.writer.fail(candidate, outcome.error))
                continue
            pending = self.writer.prepare(candidate, outcome)
            if isinstance(pending, FileResult):
                run.done(pending)
                continue
            buffer.extend((record, pending) for record in pending.records)
            if pending.remaining == 0:
                run.done(self.writer.finalize(pending))
            if len(buffer) >= self.settings.embed_batch or (buffer and pool.ready() == 0):
                run.done(*self.writer.flush(buffer))
                buffer = []
        run.done(*self.writer.flush(buffer))

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
