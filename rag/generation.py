"""Generation seam and the transformers engine that runs a local open model (HF folder or GGUF file)."""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from rag.batching import BatchScheduler
from rag.embedding import resolve_device
from rag.errors import ConfigError, ModelNotFoundError, ModelNotReadyError
from rag.model_files import find_gguf, resolve_model_path, sha256_file, weights_sha256
from rag.settings import LLMSettings

log = logging.getLogger(__name__)

Message = dict[str, str]


@dataclass
class GenerationParams:
    max_new_tokens: int = 160
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)  # the text ends before the first of these


@dataclass
class Generation:
    """A running generation: iterate it for text pieces; counts are final once iteration ends."""

    pieces: Iterator[str]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    finished_at: float | None = None

    def __iter__(self) -> Iterator[str]:
        for piece in self.pieces:
            if self.first_token_at is None:
                self.first_token_at = time.perf_counter()
            yield piece
        self.finished_at = time.perf_counter()


class GenerationEngine(Protocol):
    """Anything that turns chat messages into streamed text, and says how busy and how well it is.

    Everything a caller (the answer service, the HTTP layer, the metrics) asks of an engine is here, so no caller
    has to probe an engine for what it might have: ``tests/contracts/test_engine.py`` runs every implementation.
    """

    model_id: str
    model_sha256: str | None

    def load(self) -> None:
        """The visible warm-up: load the weights, or connect to the engines; ready for ``stream`` after it."""
        ...

    def stream(
        self, messages: list[Message], params: GenerationParams, cancel: threading.Event | None = None
    ) -> Generation:
        """Start generating; setting ``cancel`` (the client went away) stops it within a step."""
        ...

    def count_tokens(self, text: str) -> int:
        """The prompt budget's unit: the model's own tokens, or a cautious estimate where there is no tokenizer."""
        ...

    def check_capacity(self) -> None:
        """ServerBusyError now if a request submitted now would be refused, before any retrieval is done for it."""
        ...

    def load_info(self) -> dict[str, int]:
        """Requests being generated (``active``), waiting (``queued``), and how many fit at once (``slots``)."""
        ...

    def healthy(self) -> bool:
        """False once a loaded engine can no longer generate (its loop stopped): /readyz then says so."""
        ...

    def close(self) -> None:
        """Let go of the model or the connections, at shutdown."""
        ...


class TransformersEngine:
    """A causal LM through transformers, on CPU or GPU. Concurrent requests share the model through dynamic
    batching (``rag.batching``): they join and leave the batch between decode steps."""

    def __init__(self, settings: LLMSettings, cache_dir: Path) -> None:
        self.settings = settings
        self.cache_dir = cache_dir
        self.model_id = settings.model_id or settings.model
        self.model_sha256: str | None = None
        self.device = "cpu"
        self._model = None
        self._tokenizer = None
        self._load_lock = threading.Lock()
        self._scheduler: BatchScheduler | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        with self._load_lock:
            if self._model is None:
                self._load()

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = resolve_device(self.settings.device)
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("llm.device is 'cuda' but no CUDA device is visible: set llm.device to cpu or auto")
        root = resolve_model_path(self.settings.model, kind="LLM")
        gguf = find_gguf(root, self.settings.gguf_file)
        started = time.perf_counter()
        if gguf is not None:
            self.model_sha256 = sha256_file(gguf)
            self.model_id = self.settings.model_id or gguf.stem
            folder, kwargs = self._gguf_source(gguf)
        else:
            if not (root / "config.json").is_file():
                raise ModelNotFoundError(f"{root} holds neither config.json nor a .gguf file: not an LLM folder")
            self.model_sha256 = weights_sha256(root)
            self.model_id = self.settings.model_id or root.name
            folder, kwargs = root, {}
        self._check_pin()
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        quantization = self._quantization_config(dtype, gguf is not None)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, **kwargs)
        if quantization is not None:  # bitsandbytes places the weights itself
            kwargs = {**kwargs, "quantization_config": quantization, "device_map": {"": self.device}}
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype, **kwargs)
        if quantization is None:
            model.to(self.device)
        model.eval()
        if gguf is not None and "gguf_file" in kwargs and self.settings.cache_converted:
            self._save_converted(model, tokenizer)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        eos = model.generation_config.eos_token_id
        eos_ids = {tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}
        max_batch = self.settings.max_batch
        if max_batch > 1 and not BatchScheduler.supports(model):
            log.warning("%s uses a cache that cannot be batched (sliding window): one request at a time", folder)
            max_batch = 1
        self._scheduler = BatchScheduler(
            model,
            sorted(eos_ids),
            max_batch=max_batch,
            max_queue=self.settings.max_queue,
        )
        # Stop the batch thread before the interpreter tears down: a thread still inside torch at exit can
        # abort the process ("terminate called without an active exception"), as a CLI run showed once.
        atexit.register(self._scheduler.stop)
        self._tokenizer, self._model = tokenizer, model
        log.info(
            "loaded %s (%s) on %s in %.1fs",
            self.model_id,
            self.model_sha256[:12],
            self.device,
            time.perf_counter() - started,
        )

    def _check_pin(self) -> None:
        """The weights must be the pinned ones (llm.sha256), unless a mismatch is explicitly allowed."""
        expected = self.settings.sha256
        if expected is None or expected == self.model_sha256:
            return
        message = (
            f"the weights of {self.settings.model} have SHA-256 {self.model_sha256}, but llm.sha256 pins {expected}"
        )
        if not self.settings.allow_sha256_mismatch:
            raise ConfigError(
                f"{message}: restore the pinned weights, or set llm.sha256 to the new hash after a `rag eval compare` "
                "gate (llm.allow_sha256_mismatch: true starts anyway)"
            )
        log.warning("%s; starting anyway (llm.allow_sha256_mismatch)", message)

    def _quantization_config(self, dtype, is_gguf: bool):  # noqa: ANN001, ANN202
        mode = self.settings.quantization
        if mode == "none":
            return None
        if is_gguf:
            raise ConfigError(
                f"llm.quantization {mode} applies to Hugging Face folders; a GGUF file is dequantised on load: "
                "set llm.quantization to none, or point llm.model at a folder"
            )
        from transformers import BitsAndBytesConfig

        if mode == "nf4":
            return BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=dtype,
                bnb_4bit_use_double_quant=True,
            )
        return BitsAndBytesConfig(load_in_8bit=True)

    def _converted_dir(self) -> Path:
        assert self.model_sha256
        return self.cache_dir / f"converted-{self.model_sha256[:16]}"

    def _gguf_source(self, gguf: Path) -> tuple[Path, dict]:
        """Dequantising GGUF takes ~15 s on 2 cores; a converted copy keyed by the GGUF's hash loads in ~1 s."""
        converted = self._converted_dir()
        if self.settings.cache_converted and (converted / "complete").is_file():
            return converted, {}
        return gguf.parent, {"gguf_file": gguf.name}

    def _save_converted(self, model, tokenizer) -> None:  # noqa: ANN001
        target = self._converted_dir()
        partial: Path | None = None
        try:
            # A folder of its own: two processes converting the same weights at once (the cache is shared by
            # every data dir on the machine) each write their own and the first rename wins.
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
            # transformers marks GGUF-loaded models as quantized, but the tensors are already dequantized:
            # drop that marker so save_pretrained writes plain safetensors.
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(partial)
            tokenizer.save_pretrained(partial)
            (partial / "source.sha256").write_text(self.model_sha256 or "")
            (partial / "complete").write_text("")
            try:
                partial.replace(target)
            except OSError:
                if not (target / "complete").is_file():
                    raise
                shutil.rmtree(partial, ignore_errors=True)  # another process finished first: keep its copy
        except (OSError, ValueError) as exc:  # a read-only cache only costs start-up time
            log.warning("could not cache converted weights in %s: %s", target, exc)
            if partial is not None:
                shutil.rmtree(partial, ignore_errors=True)

    def _require(self):  # noqa: ANN202
        if self._model is None or self._tokenizer is None:
            raise ModelNotReadyError("the language model is still loading: retry when /readyz says ready")
        return self._model, self._tokenizer

    def count_tokens(self, text: str) -> int:
        _, tokenizer = self._require()
        return len(tokenizer.encode(text, add_special_tokens=False))

    def prompt_ids(self, messages: list[Message]):  # noqa: ANN201
        _, tokenizer = self._require()
        return tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )

    def load_info(self) -> dict[str, int]:
        """Batch occupancy: requests being generated (active), waiting (queued), and the batch size (slots)."""
        if self._scheduler is None:
            return {"active": 0, "queued": 0, "slots": self.settings.max_batch}
        return self._scheduler.load_info()

    def healthy(self) -> bool:
        """The batch loop is running (it is started by load())."""
        return self._scheduler is not None and self._scheduler.running

    def check_capacity(self) -> None:
        """ServerBusyError at once when the batch and its queue are full (before retrieval is done for nothing)."""
        if self._scheduler is not None:
            self._scheduler.check_capacity()

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.stop()

    def stream(
        self, messages: list[Message], params: GenerationParams, cancel: threading.Event | None = None
    ) -> Generation:
        """Queue the request in the batch (ServerBusyError at once when it is full) and stream its text."""
        _, tokenizer = self._require()
        assert self._scheduler is not None
        prompt = self.prompt_ids(messages)["input_ids"][0].tolist()
        tokens = self._scheduler.submit(
            prompt,
            params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            cancel=cancel,
        )
        generation = Generation(pieces=iter(()), prompt_tokens=len(prompt))

        stops = [s for s in [*self.settings.stop, *params.stop] if s]
        hold = max((len(s) for s in stops), default=1) - 1  # text that could still become a stop sequence

        def pieces() -> Iterator[str]:
            ids: list[int] = []
            sent = 0
            try:
                for token in tokens:
                    ids.append(token)
                    generation.completion_tokens = len(ids)
                    text = tokenizer.decode(ids, skip_special_tokens=True)
                    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
                    if cut >= 0:  # a stop sequence: the text ends before it, and generation stops
                        if cut > sent:
                            yield text[sent:cut]
                        return
                    ready = len(text) - hold if stops else len(text)
                    if ready > sent and not text.endswith("\ufffd"):  # never half a UTF-8 character
                        yield text[sent:ready]
                        sent = ready
                text = tokenizer.decode(ids, skip_special_tokens=True)
                if len(text) > sent:
                    yield text[sent:]
            finally:
                tokens.close()  # stopped early (client gone, stop sequence): leaves the batch at the next step

        generation.pieces = pieces()
        return generation
