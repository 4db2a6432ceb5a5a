"""What an ingest run did, file by file: the report the CLI prints and the admin API's jobs are built from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


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
