"""Dynamic batching for a transformers causal LM: requests join and leave the batch between decode steps.

One thread owns the model. Each turn of its loop it

1. admits waiting requests while the batch has room: each one's prompt is prefilled on its own, its first token
   chosen, and its key/value cache merged into the batch's (left-padded to a common length, with an attention mask
   that hides the padding and position ids that count only real tokens: ``rag.batch_cache``);
2. runs one decode step for every request in the batch at once: one token each;
3. drops the requests that finished (end of sequence, ``max_new_tokens``), were cancelled (the client went away)
   or failed, and trims padding no remaining request needs.

A failure that belongs to one request (its prefill, its first token, its sampling) fails that request only, with
:class:`~rag.errors.GenerationFailedError`; the others in the batch go on. Only a failed batch-wide step (the decode
forward pass, merging caches) fails every request in it, since the shared cache can then no longer be trusted. A
seed that torch cannot take is refused by ``submit`` itself, before the request reaches the loop.

So concurrent requests share every forward pass instead of waiting for each other's whole generation, a request
that arrives mid-way starts at the next step, and a cancelled one frees its place within one step. At most
``max_batch`` requests are generated together and ``max_queue`` more may wait; beyond that ``submit`` raises
:class:`~rag.errors.ServerBusyError` at once (a 503 with ``Retry-After``), so load beyond capacity never grows
memory or waiting time without bound.

Greedy decoding gives the same tokens as ``model.generate`` for each request alone (``tests/rag/test_batching.py``
checks it on a small random Llama); sampling uses a generator per request, seeded when the request has a seed.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from rag.batch_cache import BatchCache
from rag.errors import GenerationFailedError, InvalidRequestError, ServerBusyError

log = logging.getLogger(__name__)

_END = object()  # end of a request's token stream


@dataclass
class _Request:
    prompt: list[int]
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    cancel: threading.Event
    submitted: float = field(default_factory=time.monotonic)
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    generated: int = 0
    generator: Any = None  # its own sampling generator; None for greedy decoding
    done: bool = False
    error: BaseException | None = None  # why it failed, handed to its consumer instead of the end marker
    # The submitter's context (the HTTP request id, for log lines the loop thread writes about this request).
    context: contextvars.Context = field(default_factory=contextvars.copy_context)


class BatchScheduler:
    """Runs ``model`` for many requests at once. ``submit`` returns an iterator of token ids for one request."""

    def __init__(
        self,
        model: Any,
        eos_token_ids: Sequence[int],
        *,
        max_batch: int = 8,
        max_queue: int = 16,
    ) -> None:
        import torch

        self.torch = torch
        self.model = model
        self.device = next(model.parameters()).device
        # transformers 5.x renamed the cache argument of forward(); use whichever this version takes.
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.eos = torch.tensor(sorted(set(eos_token_ids)) or [-1], device=self.device)
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._lock = threading.Condition()
        self._waiting: deque[_Request] = deque()
        self._active: list[_Request] = []
        self._admitting: list[_Request] = []  # taken from the queue, being prefilled
        self._stopping = False
        self._seconds_per_request = 5.0  # moving average of request durations, for Retry-After
        self._batch = BatchCache(torch)  # the rows of self._active; touched only by the loop thread
        self.steps = 0
        self._thread = threading.Thread(target=self._run, name="llm-batch", daemon=True)
        self._thread.start()

    @staticmethod
    def supports(model: Any) -> bool:
        """Batching merges and trims plain key/value caches; models whose cache layers are of another kind
        (sliding-window attention, e.g. Mistral-7B-v0.1) are served one request at a time instead."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        return all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)

    # -- callers ---------------------------------------------------------------------------------------------------

    def load_info(self) -> dict[str, int]:
        with self._lock:
            active = len(self._active) + len(self._admitting)
            return {"active": active, "queued": len(self._waiting), "slots": self.max_batch}

    def submit(
        self,
        prompt: Sequence[int],
        max_new_tokens: int,
        *,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[int]:
        """Queue one request; iterate the result for its token ids. Stopping the iteration, or setting ``cancel``,
        cancels it. Raises ServerBusyError at once when the batch and the queue are full, InvalidRequestError at once
        for a seed torch cannot take; iterating raises GenerationFailedError when the model failed on it."""
        request = _Request(list(prompt), max_new_tokens, temperature, top_p, seed, cancel or threading.Event())
        if temperature > 0:
            request.generator = self._generator(seed)
        with self._lock:
            self._refuse_if_full()
            self._waiting.append(request)
            self._lock.notify()
        return self._tokens(request)

    def _generator(self, seed: int | None) -> Any:
        """A sampling generator for one request, made here in the caller's thread: a seed out of torch's range
        fails this request at once, not the shared loop (where it once failed every request in the batch)."""
        generator = self.torch.Generator(device=self.device)
        if seed is None:
            generator.seed()  # non-deterministic
            return generator
        try:
            generator.manual_seed(seed)
        except (ValueError, OverflowError, RuntimeError, TypeError) as exc:
            raise InvalidRequestError(
                f"seed {seed} is out of range: use an integer from {-(2**63)} to {2**64 - 1}",
                detail={"param": "seed"},
            ) from exc
        return generator

    def check_capacity(self) -> None:
        """ServerBusyError now if a request submitted now would be refused: lets a server refuse before it does
        any other work for the request (retrieval)."""
        with self._lock:
            self._refuse_if_full()

    def _refuse_if_full(self) -> None:
        if self._stopping:
            raise ServerBusyError("the model is shutting down: retry on another instance or after the restart")
        if len(self._active) + len(self._admitting) + len(self._waiting) >= self.max_batch + self.max_queue:
            ahead = len(self._waiting) + 1
            wait = math.ceil(self._seconds_per_request * ahead / self.max_batch)
            raise ServerBusyError(
                f"all {self.max_batch} generation slots are busy and {len(self._waiting)} requests are waiting "
                f"(llm.max_batch, llm.max_queue): retry in about {wait} s",
                retry_after=wait,
            )

    def _tokens(self, request: _Request) -> Iterator[int]:
        try:
            while True:
                try:
                    item = request.out.get(timeout=0.1)
                except queue.Empty:
                    if request.cancel.is_set():
                        return
                    continue
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            request.cancel.set()  # the consumer stopped (finished, or gone): the loop drops it at the next step
            with self._lock:
                self._lock.notify()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify()
        self._thread.join(timeout)

    # -- the loop --------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        torch = self.torch
        while True:
            with self._lock:
                while not self._stopping and not self._waiting and not self._active:
                    self._lock.wait()
                if self._stopping:
                    pending = [*self._waiting, *self._active]
                    self._waiting.clear()
                    break
                while self._waiting and len(self._active) + len(self._admitting) < self.max_batch:
                    self._admitting.append(self._waiting.popleft())
                admit = list(self._admitting)
            try:
                with torch.inference_mode():
                    for request in admit:
                        if request.cancel.is_set():
                            request.out.put(_END)
                        else:
                            self._admit(request)
                        with self._lock:  # still there when its prefill ended it, or it was cancelled
                            self._admitting[:] = [r for r in self._admitting if r is not request]
                    self._drop_finished()
                    if self._active:
                        self._decode_step()
                        self._drop_finished()
            except BaseException as exc:  # a failed batch-wide step fails every request in it; the loop goes on
                log.exception("generation step failed; failing the %d requests in the batch", len(self._active))
                self._fail_all(exc)
        for request in pending:
            request.out.put(ServerBusyError("the model is shutting down: retry after the restart"))

    def _choose(self, logits: Any, requests: Sequence[_Request]) -> Any:
        """One token per row: greedy for temperature 0, else temperature + top-p sampling. A row whose sampling
        fails fails its own request (dropped at the next step); the other rows keep their tokens."""
        chosen = logits.argmax(dim=-1)
        for row, request in enumerate(requests):
            if request.temperature <= 0 or request.done:
                continue
            try:
                chosen[row] = self._sample(logits[row], request)
            except Exception as exc:  # noqa: BLE001 - whatever it was, it is this request's alone
                self._fail(request, exc)
        return chosen

    def _sample(self, logits: Any, request: _Request) -> Any:
        """One request's next token: temperature, then top-p, then a draw from its own generator."""
        torch = self.torch
        probs = torch.softmax(logits.float() / request.temperature, dim=-1)
        if request.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            keep = sorted_probs.cumsum(-1) - sorted_probs < request.top_p
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        return torch.multinomial(probs, 1, generator=request.generator)[0]

    def _fail(self, request: _Request, exc: BaseException) -> None:
        """Mark one request failed: it leaves the batch at the next drop, and its consumer gets the error."""
        request.context.run(log.error, "generation failed for one request; the rest of the batch goes on", exc_info=exc)
        request.error = GenerationFailedError(
            "the model failed while writing this answer (other requests were not affected): retry, and tell the "
            "admins if it happens again; the server log has the details under this request's id"
        )
        request.error.__cause__ = exc
        request.done = True

    def _finish(self, request: _Request) -> None:
        request.out.put(request.error if request.error is not None else _END)

    def _emit(self, requests: Sequence[_Request], tokens: Any) -> None:
        """Hand each request its new token; an end-of-sequence token or the length limit finishes it."""
        ended = self.torch.isin(tokens, self.eos).tolist()
        for row, request in enumerate(requests):
            if request.done:
                continue
            if ended[row]:
                request.done = True
                continue
            request.generated += 1
            request.out.put(int(tokens[row]))
            if request.generated >= request.max_new_tokens:
                request.done = True

    def _admit(self, request: _Request) -> None:
        """Prefill one request and add it to the batch. Its prefill touches no shared state, so a failure there
        fails this request alone; a failure while merging into the batch's cache is the loop's to handle."""
        try:
            state = self._prefill(request)
        except Exception as exc:  # noqa: BLE001 - e.g. a prompt the model cannot take: this request's alone
            self._fail(request, exc)
            state = None
        if state is None:  # failed, or ended at its first token
            self._finish(request)
            return
        self._batch.add(*state)
        with self._lock:  # from admitting to active in one step: never counted in neither, nor in both
            self._active.append(request)
            self._admitting[:] = [r for r in self._admitting if r is not request]

    def _prefill(self, request: _Request) -> tuple[Any, Any, Any, Any] | None:
        """Run one request's prompt and choose its first token: its cache, mask, next position and last token,
        or None when it is already done (ended at its first token, or failed)."""
        torch = self.torch
        from transformers import DynamicCache

        ids = torch.tensor([request.prompt], device=self.device)
        cache = DynamicCache(config=self.model.config)
        out = self._forward(
            cache,
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            position_ids=torch.arange(ids.shape[1], device=self.device).unsqueeze(0),
            logits_to_keep=1,
        )
        token = self._choose(out.logits[:, -1, :], [request])
        self._emit([request], token)
        if request.done:
            return None
        return cache, torch.ones_like(ids), torch.tensor([ids.shape[1]], device=self.device), token

    def _forward(self, cache: Any, **inputs: Any) -> Any:
        return self.model(use_cache=True, **inputs, **{self._cache_arg: cache})

    def _decode_step(self) -> None:
        tokens = self._choose(self._batch.decode(self._forward), self._active)
        self._batch.last = tokens
        self._emit(self._active, tokens)
        self.steps += 1

    def _drop_finished(self) -> None:
        with self._lock:
            keep = [i for i, r in enumerate(self._active) if not (r.done or r.cancel.is_set())]
            if len(keep) == len(self._active):
                return
            gone = [r for i, r in enumerate(self._active) if i not in set(keep)]
            self._active = [self._active[i] for i in keep]
        now = time.monotonic()
        for request in gone:
            self._finish(request)
            self._seconds_per_request = 0.8 * self._seconds_per_request + 0.2 * (now - request.submitted)
        self._batch.keep(keep)

    def _fail_all(self, exc: BaseException) -> None:
        with self._lock:
            failed, self._active = [*self._active, *self._admitting], []
            self._admitting.clear()
        for request in failed:
            error = GenerationFailedError(
                "the model failed on a batch step, which stopped every answer in it: retry, and tell the admins if "
                "it happens again; the server log has the details"
            )
            error.__cause__ = exc
            request.out.put(error)
        self._batch.clear()
