"""Decide, per file and before any parsing, whether it needs ingesting: an unchanged file (same content hash,
ACL and tags as its ``indexed`` registry row) is skipped; one too large, unreadable or with a bad ACL sidecar
fails alone; the rest become candidates for the parse workers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ingest.chunking import document_id
from ingest.discovery import file_sha256
from ingest.report import FileResult
from rag.acl import AclMap, acl_metadata, document_tokens
from rag.docstore import DocumentRecord
from rag.errors import DocumentError, FileTooLargeError, InvalidRequestError
from rag.settings import IngestSettings

if TYPE_CHECKING:
    from rag.docstore import DocStore


@dataclass
class Candidate:
    """A file to parse, with what its new version is stored under."""

    path: Path
    doc_id: str
    file_hash: str
    size: int
    known: DocumentRecord | None
    acl: list[str]  # the ACL tokens this version gets
    tags: list[str]

    def chunk_args(self) -> dict:
        """What the chunker stamps on each chunk of this file (in a parse worker, or here)."""
        return {
            "doc_id": self.doc_id,
            "source": str(self.path),
            "file_hash": self.file_hash,
            "extra_metadata": acl_metadata(self.acl),
        }


def triage(
    path: Path,
    registry: DocStore,
    settings: IngestSettings,
    acl: list[str] | None,
    acl_map: AclMap | None,
    tags: list[str] | None,
    roots: Sequence[Path] | None = None,
) -> tuple[Candidate | None, FileResult]:
    """A candidate to parse, or None and the file's final result (unchanged, or failed)."""
    doc_id = document_id(path)
    try:
        size = path.stat().st_size
        limit = settings.max_file_mb * 1024 * 1024
        if size > limit:
            raise FileTooLargeError(
                f"{path.name}: {size / 1048576:.1f} MB is over the {settings.max_file_mb:g} MB limit: "
                "split the file or raise ingest.max_file_mb"
            )
        file_hash = file_sha256(path)
    except DocumentError as exc:
        registry.record_failure(doc_id, str(path), exc.message)
        return None, FileResult(path, "failed", error=exc.message, code=exc.code, doc_id=doc_id)
    except OSError as exc:
        message = f"{path.name}: cannot read the file ({exc.strerror or exc}): check its permissions"
        return None, FileResult(path, "failed", error=message, code="unreadable", doc_id=doc_id)
    known = registry.document(doc_id)
    try:
        recorded = known.acl if known and known.content_hash else None
        tokens = document_tokens(path, acl, acl_map, recorded, settings.default_access, roots)
    except InvalidRequestError as exc:  # a bad sidecar file: this document fails, nothing is widened
        registry.record_failure(doc_id, str(path), exc.message)
        return None, FileResult(path, "failed", error=exc.message, code="acl_invalid", doc_id=doc_id)
    labels = tags if tags is not None else (known.tags if known else [])
    same = known is not None and known.acl == tokens and known.tags == labels
    if known and known.status == "indexed" and known.content_hash == file_hash and same:
        return None, FileResult(path, "unchanged", chunks=known.chunk_count, doc_id=doc_id)
    return Candidate(path, doc_id, file_hash, size, known, tokens, labels), FileResult(path, "pending")
