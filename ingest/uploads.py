"""Files uploaded over HTTP, streamed to ``data_dir/uploads/<job id>/<file name>`` under ``server.max_upload_mb``.

They stay there as the documents' source (the registry points at them and a re-ingest reads them again); deleting
such a document removes its uploaded file too, so its words leave the disk with it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from rag.errors import InvalidRequestError, UploadTooLargeError
from rag.storage import PRIVATE_DIR, PRIVATE_FILE, disk_fault

COPY_CHUNK = 1024 * 1024
MAX_NAME_BYTES = 255

Upload = tuple[str | None, bytes | BinaryIO]


def safe_filename(name: str | None) -> str:
    """The last path component of an uploaded file's name, without control characters; refuses ``..`` and blanks."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    if base in ("", ".", ".."):
        raise InvalidRequestError(
            f"uploaded file name {name!r} has no usable file name: send each file with a name such as report.pdf"
        )
    if len(base.encode()) > MAX_NAME_BYTES:
        raise InvalidRequestError(f"uploaded file name {base[:40]!r}... is longer than {MAX_NAME_BYTES} bytes")
    return base


def numbered_filename(base: str, n: int) -> str:
    """``report-2.pdf`` for a second part named ``report.pdf``; the stem is cut so the name stays a usable length."""
    stem, dot, suffix = base.rpartition(".")
    tail = f"-{n}.{suffix}" if dot and stem else f"-{n}"
    if len(tail.encode()) >= MAX_NAME_BYTES // 2:  # an odd, very long extension: number the whole name
        stem, tail = base, f"-{n}"
    elif not (dot and stem):
        stem = base
    return stem.encode()[: MAX_NAME_BYTES - len(tail.encode())].decode(errors="ignore") + tail


def upload_names(files: Sequence[Upload]) -> list[str]:
    """A safe, distinct file name for each part: two parts with one name are both kept."""
    names: list[str] = []
    for name, _ in files:
        base = safe_filename(name)
        candidate, n = base, 1
        while candidate in names:
            n += 1
            candidate = numbered_filename(base, n)
        names.append(candidate)
    return names


def save_uploads(uploads_dir: Path, job_id: str, files: Sequence[Upload], limit_mb: float) -> list[Path]:
    """Write the parts under ``uploads_dir/<job id>/``; on any failure nothing of the upload is kept."""
    names = upload_names(files)
    folder = (uploads_dir / job_id).resolve()
    saved: list[Path] = []
    try:
        # Uploads are document text: owner-only, like the registry and the keys file.
        uploads_dir.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        folder.mkdir(mode=PRIVATE_DIR)
        for name, (_, content) in zip(names, files, strict=True):
            target = folder / name
            if target.parent != folder:  # cannot happen after safe_filename; never write elsewhere
                raise InvalidRequestError(f"uploaded file name {name!r} is not a plain file name")
            save_upload(target, content, limit_mb)
            saved.append(target)
    except OSError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        fault = disk_fault(exc, uploads_dir)
        if fault is None:
            raise
        raise fault from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return saved


def save_upload(target: Path, content: bytes | BinaryIO, limit_mb: float) -> None:
    """Write one part, owner-only, refusing it with a 413 once it passes ``limit_mb`` (file objects in chunks)."""
    limit = int(limit_mb * 1024 * 1024)

    def too_large() -> UploadTooLargeError:
        return UploadTooLargeError(
            f"{target.name}: the file is over the {limit_mb:g} MB upload limit: split it, or raise server.max_upload_mb"
        )

    with os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE), "wb") as out:
        if isinstance(content, bytes | bytearray | memoryview):
            if len(content) > limit:
                raise too_large()
            out.write(content)
            return
        written = 0
        while chunk := content.read(COPY_CHUNK):
            written += len(chunk)
            if written > limit:
                raise too_large()
            out.write(chunk)


def remove_upload(source: Path, uploads_dir: Path) -> None:
    """Delete a document's uploaded file, and its job's folder once empty; a file elsewhere is left alone."""
    uploads = uploads_dir.resolve()
    if source.is_relative_to(uploads) and source != uploads:
        source.unlink(missing_ok=True)
        try:
            source.parent.rmdir()  # the job's folder, once its last file is gone
        except OSError:
            pass
