"""Find the files to ingest under the given paths, and hash them: what the pipeline reads before any parsing."""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from ingest.readers import SUPPORTED
from ingest.report import FileResult


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
