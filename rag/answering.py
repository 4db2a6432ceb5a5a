"""The answer service: retrieve, build the prompt, generate with the local LLM, cite."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from rag import answer_kind, verify
from rag.acl import Identity
from rag.answer_checks import quote_of, settle
from rag.citations import MarkerFilter
from rag.embedding import Embedder
from rag.errors import InvalidRequestError, MaxTokensTooLargeError
from rag.generation import GenerationEngine, GenerationParams
from rag.packing import pack
from rag.prompting import PromptContext, build_messages, select_context
from rag.retrieval import Retriever
from rag.rewrite import standalone_query
from rag.schemas import Answer, Citation, RetrievedChunk, SearchFilters, Timings, Usage
from rag.settings import Settings


@dataclass
class TextDelta:
    text: str


@dataclass
class Generating:
    """Retrieval is done and the model is writing a draft, held back until it is checked. Lets a streaming caller
    start its response (and notice a client that leaves, which stops the generation) before any text exists."""


GENERATING = Generating()


def final_answer(
    events: Iterable[TextDelta | Generating | Answer], on_text: Callable[[str], None] | None = None
) -> Answer:
    """Drain an answer stream to its final :class:`Answer`, passing each piece of text to ``on_text`` as it comes
    (a terminal prints it); the one place that knows how a stream ends."""
    for event in events:
        if isinstance(event, Answer):
            return event
        if on_text is not None and isinstance(event, TextDelta):
            on_text(event.text)
    raise RuntimeError("answer stream ended without a final answer")  # pragma: no cover


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


class AnswerService:
    """Answers a question from the store, streaming text, then the full :class:`Answer`."""

    def __init__(self, settings: Settings, retriever: Retriever, embedder: Embedder, engine: GenerationEngine) -> None:
        self.settings = settings
        self.retriever = retriever
        self.embedder = embedder
        self.engine = engine

    def params(
        self,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: str | list[str] | None = None,
    ) -> GenerationParams:
        llm = self.settings.llm
        if max_tokens is not None and max_tokens > llm.max_new_tokens:
            raise MaxTokensTooLargeError(
                f"max_tokens {max_tokens} is above this server's limit of {llm.max_new_tokens} generated tokens "
                f"(llm.max_new_tokens): ask for at most {llm.max_new_tokens}",
                detail={"param": "max_tokens", "limit": llm.max_new_tokens},
            )
        return GenerationParams(
            max_new_tokens=max_tokens or llm.max_new_tokens,
            temperature=llm.temperature if temperature is None else temperature,
            top_p=llm.top_p if top_p is None else top_p,
            seed=seed,
            stop=[stop] if isinstance(stop, str) else list(stop or []),
        )

    def answer(self, question: str, **kwargs) -> Answer:  # noqa: ANN003
        return final_answer(self.stream(question, **kwargs))

    def stream(
        self,
        question: str,
        *,
        top_k: int | None = None,
        params: GenerationParams | None = None,
        cancel: threading.Event | None = None,
        identity: Identity | None = None,
        filters: SearchFilters | None = None,
        history: Sequence[dict[str, str]] | None = None,
    ) -> Iterator[TextDelta | Generating | Answer]:
        """Retrieve for ``identity`` (None: public documents only), then generate. The model only ever sees
        chunks that identity may read, so neither the answer nor its citations can leak another document.
        With a chat ``history``, a follow-up is first rewritten into a standalone query (``rag.rewrite``)."""
        started = time.perf_counter()
        asked = question
        question = standalone_query(self.settings.retrieval.rewrite, asked, history, self.engine)
        chunks = self.retriever.retrieve(question, top_k, identity=identity, filters=filters)
        relevant = [c for c in chunks if c.score >= self.settings.retrieval.min_score]
        if self.settings.prompt.pack_context:
            # Windows keep each chunk's own heading, so neighbours are not merged for them (a SEV2 list read
            # under a SEV1 heading would answer the wrong question); near-duplicates are dropped either way.
            merge = self.settings.prompt.context != "windows"
            relevant = pack(relevant, self.settings.prompt.duplicate_threshold, merge=merge)
        context = select_context(question, relevant, self.embedder, self.settings.prompt) if relevant else None
        retrieved = time.perf_counter()
        timings = Timings(retrieval_ms=_ms(retrieved - started))
        params = params or self.params()
        if context is None or not context.sources:
            yield from self._decline(asked, chunks, timings, started, question)
            return

        context = self._fit_window(question, context, params.max_new_tokens)
        reason = self._unanswerable(question, context, identity, filters)
        if reason is not None:
            yield from self._decline(asked, chunks, timings, started, question, context, reason)
            return
        if self.settings.prompt.answer == "quote":
            yield from self._quoted(asked, question, context, chunks, timings, started)
            return
        generation = self.engine.stream(build_messages(question, context), params, cancel)
        yield GENERATING
        # Only numbers that were shown to the model are valid markers; in sentences and windows mode there are none.
        markers = MarkerFilter({s.index for s in context.sources} if context.numbered else set())
        # The draft is held back until it is checked: an unsupported value is never sent, not even streamed. A
        # Generating event per piece lets a streaming caller notice a client that left, and stop the model.
        parts = []
        for piece in generation:
            parts.append(markers.feed(piece))
            yield GENERATING
        draft = ("".join(parts) + markers.flush()).strip()
        outcome = settle(question, draft, context, self.settings.prompt)
        if outcome.text:
            yield TextDelta(outcome.text)
        timings.generation_ms = _ms((generation.finished_at or time.perf_counter()) - retrieved)
        if generation.first_token_at is not None:
            timings.time_to_first_token_ms = _ms(generation.first_token_at - started)
        timings.total_ms = _ms(time.perf_counter() - started)
        usage = Usage(prompt_tokens=generation.prompt_tokens, completion_tokens=generation.completion_tokens)
        final = self._final(asked, outcome.text, outcome.found, outcome.citations, chunks, timings, usage, question)
        final.support, final.failed_claims, final.repair = outcome.support, outcome.failed, outcome.repair
        final.declined = outcome.declined
        final.context = [s.text for s in context.sources]
        yield final

    def _quoted(self, asked, question, context, chunks, timings, started):  # noqa: ANN001, ANN202
        """prompt.answer: quote. The best window of the evidence, word for word, is the answer; no generation."""
        quoted = quote_of(context)
        if quoted is None:
            yield from self._decline(asked, chunks, timings, started, question, context)
            return
        text, citation = quoted
        check = verify.check(text, [citation.text], question)
        yield TextDelta(text)
        timings.total_ms = _ms(time.perf_counter() - started)
        final = self._final(asked, text, True, [citation], chunks, timings, Usage(), question)
        final.support, final.failed_claims = check.support, [c.text for c in check.failed]
        final.context = [s.text for s in context.sources]
        yield final

    def _decline(self, asked, chunks, timings, started, question, context=None, reason=None):  # noqa: ANN001, ANN202
        refusal = self.settings.prompt.refusal
        yield TextDelta(refusal)
        timings.total_ms = _ms(time.perf_counter() - started)
        final = self._final(asked, refusal, False, [], chunks, timings, Usage(), question)
        final.context = [s.text for s in context.sources] if context is not None else []
        final.declined = reason or "no passage of the caller's documents is relevant (retrieval.min_score)"
        yield final

    def _unanswerable(
        self, question: str, context: PromptContext, identity: Identity | None, filters: SearchFilters | None
    ) -> str | None:
        """Before answering: why the evidence cannot answer, or None. The best window must score at least
        ``prompt.min_evidence_score``; every identifier, name, version or quoted text the question asks about must
        be in the passages or, failing that, somewhere in the caller's documents (a question about a directive the
        manual does not have gets no answer)."""
        prompt = self.settings.prompt
        if prompt.require_question_terms:
            texts = "\n".join(f"{s.chunk.title}\n{s.chunk.heading}\n{s.chunk.text}" for s in context.sources)
            for claim in verify.claims(question):
                if claim.kind == "number" and not re.search(r"\d[.:]\d", claim.text):
                    continue  # "a 9-hour flight", "after five years": context, not a thing to look up
                if claim.kind == "name" and claim.text.lower() in verify.CALENDAR:
                    continue
                if self._mentioned(claim, texts, identity, filters):
                    continue
                return f"the documents never mention {claim.text!r}"
        if context.evidence is not None and not context.evidence.kind_stated:
            asked = answer_kind.describe(context.evidence.kinds)
            return f"no passage near the top states the {asked} that the question asks for (prompt.answer_kind_depth)"
        if context.evidence is not None:
            best = context.evidence.best
            if best is None or best.score < prompt.min_evidence_score:
                return "no passage answers the question closely enough (prompt.min_evidence_score)"
        return None

    def _mentioned(
        self, claim: verify.Claim, passages: str, identity: Identity | None, filters: SearchFilters | None
    ) -> bool:
        """Is the claim in the passages, or in a document the caller may see? Short option flags ("-S") are not
        checked: the keyword index cannot tell "-S" from an "s", so they never decline a question."""
        if re.fullmatch(r"--?\w{1,2}", claim.text) or verify.holds(claim, passages):
            return True
        texts = self.retriever.texts_mentioning(claim.text, identity=identity, filters=filters)
        return any(verify.holds(claim, t) for t in texts)

    def stream_plain(
        self,
        messages: list[dict[str, str]],
        *,
        params: GenerationParams | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[TextDelta | Answer]:
        """The model alone, on the caller's messages: no retrieval, no document text, no citations. For callers
        that need a plain OpenAI-compatible LLM, such as an evaluation judge."""
        if not any(m.get("content", "").strip() for m in messages):
            raise InvalidRequestError("the messages hold no text: send at least one message with content")
        started = time.perf_counter()
        params = params or self.params()
        budget = self.settings.llm.context_window - params.max_new_tokens
        used = self.engine.count_tokens("\n".join(m.get("content", "") for m in messages))
        if used > budget:
            raise InvalidRequestError(
                f"the messages are {used} tokens; with {params.max_new_tokens} to generate the model's window "
                f"({self.settings.llm.context_window}) allows {budget}: shorten them or lower max_tokens"
            )
        generation = self.engine.stream(messages, params, cancel)
        parts = []
        for piece in generation:
            parts.append(piece)
            yield TextDelta(piece)
        timings = Timings(generation_ms=_ms((generation.finished_at or time.perf_counter()) - started))
        if generation.first_token_at is not None:
            timings.time_to_first_token_ms = _ms(generation.first_token_at - started)
        timings.total_ms = _ms(time.perf_counter() - started)
        usage = Usage(prompt_tokens=generation.prompt_tokens, completion_tokens=generation.completion_tokens)
        question = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        yield self._final(question, "".join(parts).strip(), True, [], [], timings, usage)

    def _fit_window(self, question: str, context: PromptContext, answer_tokens: int) -> PromptContext:
        """Drop the weakest sources until prompt + answer fit the model's context window.

        Sentences mode is already bounded by ``prompt.max_sentences``; whole chunks can overflow.
        """
        budget = self.settings.llm.context_window - answer_tokens
        while context.numbered and len(context.sources) > 1:
            prompt = "\n".join(m["content"] for m in build_messages(question, context))
            if self.engine.count_tokens(prompt) <= budget:
                break
            context = PromptContext(context.sources[:-1], context.sentences, context.mode, context.evidence)
        return context

    def _final(
        self,
        question: str,
        text: str,
        found: bool,
        citations: list[Citation],
        chunks: list[RetrievedChunk],
        timings: Timings,
        usage: Usage,
        retrieval_query: str | None = None,
    ) -> Answer:
        return Answer(
            question=question,
            answer=text,
            found=found,
            citations=citations,
            chunks=chunks,
            model=self.engine.model_id,
            model_sha256=self.engine.model_sha256,
            timings=timings,
            usage=usage,
            retrieval_query=retrieval_query if retrieval_query is not None else question,
        )
