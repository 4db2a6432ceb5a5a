"""The saved form of a search index (``rag.seams.SearchIndex``): named numpy arrays and string lists in one
directory, and a manifest naming each file with its size and SHA-256 digest, the index kind, the format and the
store's ``vectors_version`` the index reflects.

Why this form: ``.npy`` files load without pickle, so a damaged or edited file cannot run code. A library's own
index file (a "blob", ``.bin``) is checked the same way and handed back by path, so the library can map it.
Each save writes its files under fresh names, then replaces the manifest atomically, then drops the files the old
manifest named: a crash at any moment leaves the old copy or the new one whole. A torn, truncated or edited file
fails its size or digest on load, and the caller rebuilds from Chroma instead of searching wrong rows. One process
saves at a time (the one holding the store); the files are owner-only, like the store's.

No file is ever written again once made, nor truncated: arrays load memory-mapped read-only, so every process that
loads the copy shares them through the page cache, and another process's save only unlinks them, which leaves
existing mappings valid.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import IndexFileError

FORMAT = "rag-search-index"
FORMAT_VERSION = 2  # 2: chunk ids as a fixed-width byte array with its sorted order, not a JSON list
MANIFEST = "manifest.json"
_DATA_FILE = re.compile(r"^[a-z_]+-[0-9a-f]{12}\.(npy|json|bin)$")
_READ_BLOCK = 1 << 20


@dataclass
class SavedIndex:
    version: int  # the store's vectors_version when saved
    arrays: dict[str, np.ndarray]
    lists: dict[str, list[str]]
    info: dict[str, Any]  # the kind's own manifest fields (sizes, settings)
    blobs: dict[str, Path] = field(default_factory=dict)  # checked library files, opened by the caller


class _Digesting:
    """A file writer that also counts and hashes what goes through it (np.save writes in chunks to any writer)."""

    def __init__(self, file: Any) -> None:
        self.file, self.digest, self.size = file, hashlib.sha256(), 0

    def write(self, data: bytes | memoryview) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.file.write(data)


def _write_new(path: Path, fill: Any) -> dict[str, Any]:
    """Create ``path`` owner-only, fill it, flush it to disk; its manifest entry."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
        out = _Digesting(f)
        fill(out)
        f.flush()
        os.fsync(f.fileno())
    return {"file": path.name, "bytes": out.size, "sha256": out.digest.hexdigest()}


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_index(
    path: Path,
    kind: str,
    version: int,
    arrays: Mapping[str, np.ndarray],
    lists: Mapping[str, Sequence[str]],
    info: Mapping[str, Any],
    blobs: Mapping[str, Any] | None = None,
) -> None:
    """Write a new copy of an index under the directory ``path`` and make it the current one. ``blobs``: raw
    bytes (any buffer) written as they are, for a library that reads its own file format."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_hex(6)
    files: dict[str, dict[str, Any]] = {}
    for name, array in arrays.items():
        files[name] = _write_new(path / f"{name}-{token}.npy", lambda f, a=array: np.save(f, a, allow_pickle=False))
    for name, items in lists.items():
        files[name] = _write_new(
            path / f"{name}-{token}.json", lambda f, i=items: f.write(json.dumps(list(i)).encode())
        )
    for name, data in (blobs or {}).items():
        files[name] = _write_new(path / f"{name}-{token}.bin", lambda f, d=data: f.write(memoryview(d).cast("B")))
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "version": int(version)}
    manifest |= {"info": dict(info), "files": files}
    staged = path / f"{MANIFEST}.{token}.tmp"
    _write_new(staged, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    os.replace(staged, path / MANIFEST)
    _sync_dir(path)
    current = {entry["file"] for entry in files.values()}
    for old in path.iterdir():  # the previous copy's files, and any a crashed save left
        if old.name not in current and (_DATA_FILE.match(old.name) or old.name.endswith(".tmp")):
            old.unlink(missing_ok=True)


def index_file_error(path: Path, reason: str) -> IndexFileError:
    return IndexFileError(
        f"the saved search index at {path} {reason}: rebuild it from the store's records",
        detail={"path": str(path), "reason": reason},
    )


def _checked(path: Path, entry: Any) -> Path:
    """The data file a manifest entry names, once its size and digest match."""
    if not isinstance(entry, dict) or not _DATA_FILE.match(str(entry.get("file", ""))):
        raise index_file_error(path, "has a manifest entry that names no file of its own")
    target = path / entry["file"]
    try:
        if target.stat().st_size != entry.get("bytes"):
            raise index_file_error(path, f"has a file of the wrong size ({target.name}: truncated or overwritten)")
        digest = hashlib.sha256()
        with open(target, "rb") as f:
            while block := f.read(_READ_BLOCK):
                digest.update(block)
    except OSError as exc:
        raise index_file_error(path, f"cannot be read ({target.name}: {exc.strerror or exc})") from exc
    if digest.hexdigest() != entry.get("sha256"):
        raise index_file_error(path, f"has a damaged file ({target.name}: its digest does not match)")
    return target


def _manifest(path: Path, kind: str) -> dict[str, Any]:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError as exc:
        raise index_file_error(path, "is missing") from exc
    except (OSError, ValueError) as exc:
        raise index_file_error(path, f"has an unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise index_file_error(path, "has a manifest of another format")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise index_file_error(path, f"is of format version {manifest.get('format_version')}, not {FORMAT_VERSION}")
    if manifest.get("kind") != kind:
        raise index_file_error(path, f"is a {manifest.get('kind')!r} index, not {kind!r}")
    if not isinstance(manifest.get("version"), int) or not isinstance(manifest.get("files"), dict):
        raise index_file_error(path, "has a manifest without its version or files")
    return manifest


def saved_version(path: Path) -> int | None:
    """The store version the copy under ``path`` was saved at, from its manifest alone; None without one."""
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    version = manifest.get("version") if isinstance(manifest, dict) else None
    return version if isinstance(version, int) else None


def load_index(path: Path, kind: str, version: int | None = None) -> SavedIndex:
    """The copy saved under ``path``, every file checked; IndexFileError when it is missing, damaged, of another
    kind or format, or (``version`` given) saved at another store version: stale. Arrays come back memory-mapped
    read-only, after their digest was checked: a caller that writes to one copies it first."""
    path = Path(path)
    manifest = _manifest(path, kind)
    if version is not None and manifest["version"] != version:
        raise index_file_error(
            path, f"is stale (saved at store version {manifest['version']}, the store is at {version})"
        )
    arrays: dict[str, np.ndarray] = {}
    lists: dict[str, list[str]] = {}
    blobs: dict[str, Path] = {}
    for name, entry in manifest["files"].items():
        target = _checked(path, entry)
        if target.suffix == ".bin":
            blobs[name] = target
            continue
        try:
            if target.suffix == ".npy":
                arrays[name] = np.load(target, allow_pickle=False, mmap_mode="r")
            else:
                lists[name] = json.loads(target.read_bytes())
        except (OSError, ValueError, EOFError) as exc:
            raise index_file_error(path, f"has an unreadable file ({target.name}: {exc})") from exc
        if name in lists and not (isinstance(lists[name], list) and all(isinstance(s, str) for s in lists[name])):
            raise index_file_error(path, f"has a list file that is not a list of strings ({target.name})")
    return SavedIndex(manifest["version"], arrays, lists, dict(manifest.get("info") or {}), blobs)
