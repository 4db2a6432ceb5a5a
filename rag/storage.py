"""The data dir on disk: private files, and disk faults (full, read-only) turned into one line with the fix.

SQLite, Chroma and plain file writes each report a full or read-only disk their own way (``OSError`` with
``ENOSPC``/``EROFS``, ``sqlite3.OperationalError: database or disk is full``, a chromadb ``InternalError`` that
quotes SQLite). :func:`disk_fault` recognises them all, so every caller says the same thing: what is wrong,
where, and what to do. Nothing already committed is lost in either case, and the next run picks up where the
failed one stopped (documents left ``indexing`` are redone).
"""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path

from rag.errors import StoreError

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_READ_ONLY_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}
_FULL_TEXTS = ("database or disk is full", "no space left on device", "disk quota exceeded")
_READ_ONLY_TEXTS = ("readonly database", "read-only file system", "read only file system", "permission denied")


class DiskFullError(StoreError):
    code = "disk_full"
    status = 507
    title = "The disk is full"


class ReadOnlyStoreError(StoreError):
    code = "store_read_only"
    status = 503
    title = "The data dir is read-only"


def disk_fault(exc: BaseException, where: Path | str) -> StoreError | None:
    """A one-line error for a full or read-only disk under ``where``, or None when ``exc`` is something else."""
    if isinstance(exc, DiskFullError | ReadOnlyStoreError):
        return exc
    number = exc.errno if isinstance(exc, OSError) else None
    text = str(exc).lower()
    if number in _FULL_ERRNOS or any(t in text for t in _FULL_TEXTS):
        return DiskFullError(
            f"the disk holding {where} is full: free some space (or move the data dir to a larger disk and set "
            "RAG_DATA_DIR), then run it again; what was stored before is kept and the next run redoes the rest"
        )
    if number in _READ_ONLY_ERRNOS or any(t in text for t in _READ_ONLY_TEXTS):
        return ReadOnlyStoreError(
            f"the data dir {where} is read-only: remount it read-write or give this user write access "
            "(chown/chmod), or set RAG_DATA_DIR to a writable folder, then run it again"
        )
    return None


def check_writable(data_dir: Path) -> None:
    """Fail at start-up, in one line, when the data dir cannot be written (rather than a traceback later)."""
    data_dir = Path(data_dir)
    probe = data_dir / f".write-test-{uuid.uuid4().hex[:8]}"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as exc:
        raise disk_fault(exc, data_dir) or StoreError(
            f"cannot write to the data dir {data_dir} ({exc.strerror or exc}): check the path and its permissions"
        ) from None


def make_private(*paths: Path) -> None:
    """Owner-only permissions on files that hold document text (a registry written before this was 0644)."""
    for path in paths:
        try:
            if path.exists() and path.stat().st_mode & 0o077:
                path.chmod(PRIVATE_FILE)
        except OSError:  # not ours to change (another owner): SQLite still works; the check is best effort
            pass


def create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists: SQLite then gives its WAL and shm files that mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    except FileExistsError:
        pass
