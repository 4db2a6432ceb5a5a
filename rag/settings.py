"""One typed settings tree: defaults < optional YAML file < environment (prefix ``RAG_``) < explicit overrides.

Nested fields use ``__`` in the environment, e.g. ``RAG_LLM__MAX_NEW_TOKENS=64``.

The tree is open to the packages above ``rag/``. ``Settings`` holds the sections that rag/, ingest/ and serving/ read
(defined in ``rag.settings_sections`` and ``rag.settings_server``). A package with settings of its own adds its
section by subclassing ``Settings`` and loads through ``load_settings(..., root=ThatClass)``: eval/ does so
(``eval.settings.FullSettings`` adds ``eval``, and the `rag` command loads that class). Every check here walks the
root class it is given: unknown keys refused with their path and the nearest name, unknown ``RAG_`` variables, the
variables that ``*_env`` fields name. So an added section is validated at start-up like the built-in ones, while
rag/ never imports the package that adds it (the arrows keep pointing into rag/).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from rag.errors import ConfigError
from rag.settings_auth import AuthSettings, ConversationSettings
from rag.settings_sections import (
    ChromaSettings,
    ChunkingSettings,
    Device,
    EmbeddingSettings,
    IngestSettings,
    LLMSettings,
    PromptSettings,
    RetrievalSettings,
    Section,
    UpstreamSettings,
)
from rag.settings_server import ApiKey, ServerSettings

__all__ = [
    "ApiKey",
    "ChromaSettings",
    "ChunkingSettings",
    "Device",
    "EmbeddingSettings",
    "IngestSettings",
    "LLMSettings",
    "PromptSettings",
    "RetrievalSettings",
    "Section",
    "ServerSettings",
    "Settings",
    "UpstreamSettings",
    "check_environment",
    "load_settings",
]


class Settings(BaseSettings):
    """Everything rag/, ingest/ and serving/ read at start-up (packages above add sections by subclassing)."""

    model_config = SettingsConfigDict(env_prefix="RAG_", env_nested_delimiter="__", extra="forbid")

    data_dir: Path = Field(Path("data"), description="Where the vector store, registry and logs live.")
    cache_dir: Path = Field(
        default_factory=lambda: default_cache_dir(),
        description="Derived model files (the int8 ONNX embedder, GGUF weights converted for transformers), shared "
        "by every data dir on the machine and keyed by the source weights' hash: built once per machine, not once "
        "per data dir. Default: $XDG_CACHE_HOME/private-rag, else ~/.cache/private-rag.",
    )
    collection: str = Field("documents", description="Chroma collection name.")
    chroma: ChromaSettings = Field(default_factory=ChromaSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    chunking: ChunkingSettings = Field(default_factory=ChunkingSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    prompt: PromptSettings = Field(default_factory=PromptSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    conversations: ConversationSettings = Field(default_factory=ConversationSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit arguments (CLI flags, the YAML profile) win over the environment.
        return init_settings, env_settings


S = TypeVar("S", bound=Settings)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "private-rag"


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(
    config: Path | str | None = None,
    *,
    root: type[S] = Settings,  # type: ignore[assignment]  # mypy: a TypeVar'd default
    **overrides: Any,
) -> S:
    """Build settings from an optional YAML profile (or ``RAG_CONFIG``), the environment and overrides.

    An unknown key anywhere (the profile, a ``RAG_`` variable, an override) is refused with its path and the
    nearest valid name: pydantic-settings would otherwise ignore an unknown variable, and a typo such as
    ``llm.sha_256`` would silently drop a setting. ``root`` is the class of the whole tree: ``Settings``, or a
    subclass with the sections of a package above rag/ (see the module's docstring)."""
    config = config or os.environ.get("RAG_CONFIG")
    values: dict[str, Any] = {}
    if config:
        path = Path(config)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist: pass an existing YAML file or unset RAG_CONFIG")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of settings, not {type(loaded).__name__}")
        values = loaded
    overrides = {k: v for k, v in overrides.items() if v is not None}
    check_environment(_secret_env_names(root, values, overrides), root)
    where = f" (config file {config})" if config else ""
    try:
        # Environment variables must beat the YAML file, so merge the env view over it explicitly.
        env_view = root().model_dump(exclude_unset=True) if _has_rag_env() else {}
        values = _deep_merge(_deep_merge(values, env_view), overrides)
        return root(**values)
    except ValidationError as exc:
        problems = "; ".join(_describe(e, root) for e in exc.errors())
        raise ConfigError(f"invalid settings{where}: {problems}") from exc


def _has_rag_env() -> bool:
    return any(key.upper().startswith(ENV_PREFIX) and key.upper() != "RAG_CONFIG" for key in os.environ)


# -- unknown keys: their path and the nearest valid name ------------------------------------------------------

ENV_PREFIX = "RAG_"
ENV_DELIMITER = "__"
# RAG_ variables that are not settings: the profile's path, and the test suite's own knobs (RAG_TEST_*).
NOT_SETTINGS = ("RAG_CONFIG",)
TEST_PREFIX = "RAG_TEST_"


def _section(annotation: Any) -> type[BaseModel] | None:
    """The settings model inside a field's type (``X``, ``X | None``, ``list[X]``, ``dict[str, X]``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = get_args(annotation)
    if get_origin(annotation) is dict and len(args) == 2:
        return _section(args[1])
    for arg in args:
        found = _section(arg)
        if found is not None:
            return found
    return None


def _model_at(loc: tuple[Any, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    """The settings model that holds the last key of ``loc`` (a pydantic error location), walking the tree."""
    model: type[BaseModel] | None = root
    for part in loc[:-1]:
        if model is None:
            return None
        if isinstance(part, int) or (part not in model.model_fields):
            continue  # a list index or a dict key: the items' model stays in hand
        model = _section(model.model_fields[part].annotation)
    return model


def nearest(name: str, names: Any) -> str | None:
    found = difflib.get_close_matches(name, list(names), n=1, cutoff=0.6)
    return found[0] if found else None


def _describe(error: Any, root: type[BaseModel]) -> str:
    loc = tuple(error["loc"])
    path = ".".join(str(p) for p in loc)
    if error["type"] != "extra_forbidden" or not loc:
        return f"{path}: {error['msg']}"
    model = _model_at(loc, root)
    names = list(model.model_fields) if model is not None else []
    guess = nearest(str(loc[-1]), names)
    parent = ".".join(str(p) for p in loc[:-1])
    if guess is not None:
        return f"{path} is not a setting: did you mean {'.'.join([*(str(p) for p in loc[:-1]), guess])}?"
    return f"{path} is not a setting; {parent or 'the top level'} has: {', '.join(names)}"


def _secret_env_names(root: type[BaseModel], *sources: dict[str, Any]) -> set[str]:
    """Names of variables that settings point at for secrets (``*_env`` fields): not settings themselves."""
    names = _default_env_names(root)

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, str(k))
        elif isinstance(value, list):
            for item in value:
                walk(item, key)
        elif key.endswith("_env") and isinstance(value, str):
            names.add(value)

    for source in sources:
        walk(source)
    for key, value in os.environ.items():
        if key.upper().startswith(ENV_PREFIX) and key.upper().endswith("_ENV"):
            names.add(value)
    return names


def _default_env_names(model: type[BaseModel]) -> set[str]:
    """The defaults of the ``*_env`` fields anywhere in the tree (``eval.judge_api_key_env``: RAG_JUDGE_API_KEY)."""
    names = set()
    for name, field in model.model_fields.items():
        if name.endswith("_env") and isinstance(field.default, str):
            names.add(field.default)
        section = _section(field.annotation)
        if section is not None:
            names |= _default_env_names(section)
    return names


def check_environment(secret_names: Collection[str] = (), root: type[BaseModel] = Settings) -> None:
    """Refuse a ``RAG_`` variable that names no setting, e.g. ``RAG_RETRIVAL__TOP_K``, with the nearest name."""
    problems = []
    for key in sorted(os.environ):
        upper = key.upper()
        if not upper.startswith(ENV_PREFIX) or upper in NOT_SETTINGS or upper.startswith(TEST_PREFIX):
            continue
        if key in secret_names:
            continue
        parts = upper[len(ENV_PREFIX) :].split(ENV_DELIMITER)
        model: type[BaseModel] | None = root
        for i, part in enumerate(parts):
            if model is None:
                break  # a list or a mapping given as JSON: its items are checked when it is parsed
            if part.lower() not in model.model_fields:
                guess = nearest(part.lower(), model.model_fields)
                if guess:
                    fix = (
                        f"did you mean {ENV_PREFIX}{ENV_DELIMITER.join([*parts[:i], guess.upper(), *parts[i + 1 :]])}?"
                    )
                else:
                    within = ".".join(p.lower() for p in parts[:i]) or "the top level"
                    fix = f"{within} has: {', '.join(model.model_fields)}"
                path = ".".join(p.lower() for p in parts[: i + 1])
                problems.append(f"{key} sets {path}, which is not a setting: {fix}")
                break
            model = _section(model.model_fields[part.lower()].annotation)
    if problems:
        raise ConfigError(
            "unknown RAG_ environment variable(s): " + "; ".join(problems) + " (unset it, or fix its name)"
        )
