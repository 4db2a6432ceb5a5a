"""Which server-side paths the admin API may ingest: those that resolve, symlinks followed, inside one of
``server.admin_paths``.

A folder holding symlinks to files outside those folders fails its job rather than letting the links be followed:
the pipeline follows symlinked files it finds in a folder, so checking the requested paths alone is not enough.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ingest.discovery import discover
from rag.errors import InvalidRequestError, PathNotAllowedError


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def allowed_roots(admin_paths: Sequence[str | Path]) -> list[Path]:
    """``server.admin_paths`` resolved, so a path is compared with where the folders really are."""
    return [Path(root).expanduser().resolve() for root in admin_paths]


def check_paths(paths: Sequence[str | Path], admin_paths: Sequence[str | Path]) -> list[Path]:
    """Resolved paths, each inside one of ``server.admin_paths``; refuses anything else."""
    if not paths:
        raise InvalidRequestError("no paths given: send `paths` with one or more files or folders")
    if not admin_paths:
        raise PathNotAllowedError(
            "server-side ingest is off: no folder is allowed yet. Add the folder to server.admin_paths "
            "(e.g. RAG_SERVER__ADMIN_PATHS='[\"/srv/docs\"]') and restart, or upload the files instead"
        )
    roots = allowed_roots(admin_paths)
    return list(dict.fromkeys(_check_path(raw, roots) for raw in paths))


def _check_path(raw: str | Path, roots: list[Path]) -> Path:
    text = str(raw)
    if not text.strip() or "\x00" in text:
        raise InvalidRequestError(f"path {text!r} is not a usable path")
    try:
        path = Path(text).expanduser().resolve()
    except (OSError, RuntimeError):  # a symlink loop
        raise InvalidRequestError(f"{text}: the symlink loops back on itself: fix or remove it") from None
    if not _inside(path, roots):
        allowed = ", ".join(str(r) for r in roots)
        raise PathNotAllowedError(
            f"{text} is outside the folders the admin API may read ({allowed}): "
            "add the folder to server.admin_paths and restart, or upload the files instead"
        )
    if not path.exists():
        raise InvalidRequestError(f"{text}: no such file or folder on the server: check the path")
    return path


def check_links(paths: Sequence[Path], admin_paths: Sequence[str | Path]) -> None:
    """Refuse a job whose folders hold symlinks to files outside ``server.admin_paths``.

    The pipeline follows symlinked files found in a folder, so the check on the requested paths alone would
    let a link inside an allowed folder read anything the server can. Run just before the job, on the worker.
    """
    roots = allowed_roots(admin_paths)
    files, _ = discover(paths)
    outside = [f for f in files if not _inside(f, roots)]
    if outside:
        shown = ", ".join(str(f) for f in outside[:3]) + (f" and {len(outside) - 3} more" if len(outside) > 3 else "")
        raise PathNotAllowedError(
            f"the folder links to files outside server.admin_paths ({shown}): remove the symlinks, or add "
            "the folder they point into to server.admin_paths and restart"
        )
