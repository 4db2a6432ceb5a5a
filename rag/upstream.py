"""Generation delegated to OpenAI-compatible servers: the scale-out path.

Many GPUs behind a real serving engine (vLLM, TGI, llama.cpp's server, or another instance of this project serving
``<model>:no-rag``) generate; retrieval, access control, prompting, citations and the audit log stay here.

Failure policy:

- each engine gets a connect timeout and a per-chunk read timeout, and retries connection errors, 408, 429 and
  5xx with backoff (the ``openai`` client's own retry loop), ``retries`` times;
- an engine that still fails before its first token is skipped for the next one in ``llm.fallbacks``;
- once text has streamed, a failure ends that answer with an error (text already sent cannot be taken back);
- with every engine down: 503 ``upstream_unavailable`` with ``Retry-After``.

In-flight requests are bounded by ``llm.max_batch + llm.max_queue``, as with the local engine.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator

from rag.errors import ConfigError, ServerBusyError, UpstreamUnavailableError
from rag.generation import Generation, GenerationParams, Message
from rag.settings import LLMSettings, UpstreamSettings

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 3  # no local tokenizer for a remote model: a cautious estimate for prompt budgets


class OpenAIUpstreamEngine:
    def __init__(self, settings: LLMSettings) -> None:
        if settings.upstream is None:
            raise ConfigError("llm.mode is openai but llm.upstream is not set: give its url and model")
        self.settings = settings
        self.endpoints: list[UpstreamSettings] = [settings.upstream, *settings.fallbacks]
        # This project's own server serves the bare model as "<id>:no-rag"; the name we report is the model's.
        self.model_id = settings.model_id or settings.upstream.model.removesuffix(":no-rag")
        self.model_sha256: str | None = None
        self._clients: list = []
        self._lock = threading.Lock()
        self._active = 0
        self.loaded = False

    def _client(self, endpoint: UpstreamSettings):  # noqa: ANN202
        import httpx
        import openai

        key = os.environ.get(endpoint.api_key_env, "") if endpoint.api_key_env else ""
        return openai.OpenAI(
            base_url=endpoint.url,
            api_key=key or "none",
            max_retries=endpoint.retries,
            timeout=httpx.Timeout(endpoint.timeout_s, connect=endpoint.connect_timeout_s),
        )

    def load(self) -> None:
        """Connect to each engine and check it serves its model; ready when at least one does."""
        import openai

        self._clients = [self._client(e) for e in self.endpoints]
        problems = []
        for endpoint, client in zip(self.endpoints, self._clients, strict=True):
            try:
                models = {m.id: m for m in client.models.list().data}
            except openai.OpenAIError as exc:
                problems.append(f"{endpoint.url}: {exc}")
                log.warning("upstream %s is not answering: %s", endpoint.url, exc)
                continue
            if endpoint.model not in models:
                raise ConfigError(
                    f"{endpoint.url} does not serve model {endpoint.model!r} (it serves {', '.join(sorted(models))}): "
                    "fix llm.upstream.model"
                )
            sha = (models[endpoint.model].model_extra or {}).get("sha256")
            if endpoint is self.endpoints[0]:
                self.model_sha256 = sha
            self._check_pin(endpoint, sha)
        if len(problems) == len(self.endpoints):
            raise UpstreamUnavailableError("no generation engine answers: " + "; ".join(problems))
        self.loaded = True

    def _check_pin(self, endpoint: UpstreamSettings, sha: str | None) -> None:
        expected = self.settings.sha256
        if expected is None or sha is None or sha == expected:
            return  # engines that do not report their weights' hash cannot be checked here
        message = f"{endpoint.url} serves {endpoint.model} with weights {sha}, but llm.sha256 pins {expected}"
        if not self.settings.allow_sha256_mismatch:
            raise ConfigError(message + ": point llm.upstream at the pinned model, or update llm.sha256")
        log.warning("%s; starting anyway (llm.allow_sha256_mismatch)", message)

    def count_tokens(self, text: str) -> int:
        return len(text) // CHARS_PER_TOKEN + 1

    def load_info(self) -> dict[str, int]:
        with self._lock:
            return {"active": self._active, "queued": 0, "slots": self.settings.max_batch + self.settings.max_queue}

    def healthy(self) -> bool:
        return self.loaded

    def check_capacity(self) -> None:
        with self._lock:
            limit = self.settings.max_batch + self.settings.max_queue
            if self._active >= limit:
                raise ServerBusyError(
                    f"{self._active} requests are already with the generation engines (llm.max_batch + "
                    "llm.max_queue): retry shortly",
                    retry_after=2,
                )

    def _release(self) -> None:
        with self._lock:
            self._active -= 1

    def close(self) -> None:
        for client in self._clients:
            client.close()

    def stream(
        self, messages: list[Message], params: GenerationParams, cancel: threading.Event | None = None
    ) -> Generation:
        """Stream from the first engine that answers; fall back to the next while nothing has been streamed."""
        if not self._clients:
            raise UpstreamUnavailableError("the generation engines are not connected yet: retry shortly")
        self.check_capacity()
        with self._lock:
            self._active += 1
        generation = Generation(pieces=iter(()))
        cancel = cancel or threading.Event()
        # Its place is given back when the stream ends, or when the generation is dropped unread (a client gone
        # before the first byte): a generator that never started never runs its ``finally``.
        release = weakref.finalize(generation, self._release)

        def pieces() -> Iterator[str]:
            try:
                failures = []
                for endpoint, client in zip(self.endpoints, self._clients, strict=True):
                    try:
                        stream = self._open(client, endpoint, messages, params)
                        chunks = iter(stream)
                        first = next(chunks, None)  # a failure before the first chunk moves on to the next engine
                    except Exception as exc:  # noqa: BLE001 - the openai client's errors, and transport errors
                        failures.append(f"{endpoint.url}: {type(exc).__name__}: {exc}")
                        log.warning("upstream %s failed before answering (%s); trying the next", endpoint.url, exc)
                        continue
                    if endpoint is not self.endpoints[0]:
                        log.warning("answered by fallback engine %s", endpoint.url)
                    try:
                        yield from self._relay(first, chunks, generation, cancel)
                    finally:
                        stream.close()  # on cancel: the upstream sees the disconnect and stops generating
                    return
                raise UpstreamUnavailableError("every generation engine failed: " + "; ".join(failures), retry_after=5)
            finally:
                release()

        generation.pieces = pieces()
        return generation

    def _open(self, client, endpoint: UpstreamSettings, messages: list[Message], params: GenerationParams):  # noqa: ANN001, ANN202
        options: dict = {
            "model": endpoint.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.seed is not None:
            options["seed"] = params.seed
        stop = [*self.settings.stop, *params.stop]
        if stop:
            options["stop"] = stop[:4]
        return client.chat.completions.create(**options)

    @staticmethod
    def _relay(first, chunks, generation: Generation, cancel: threading.Event) -> Iterator[str]:  # noqa: ANN001
        started = time.perf_counter()
        for chunk in _chain(first, chunks):
            if cancel.is_set():
                return
            usage = getattr(chunk, "usage", None)
            if usage is not None:
                generation.prompt_tokens = usage.prompt_tokens or 0
                generation.completion_tokens = usage.completion_tokens or 0
            if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
                if not usage:
                    generation.completion_tokens += 1  # an estimate until the engine reports usage
                yield chunk.choices[0].delta.content
        log.debug("upstream stream finished in %.1f s", time.perf_counter() - started)


def _chain(first, rest) -> Iterator:  # noqa: ANN001
    if first is not None:
        yield first
    yield from rest
