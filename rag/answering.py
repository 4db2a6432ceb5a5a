"""The answer service: retrieve, build the prompt, generate with the local LLM, cite."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from rag.acl import Identity
from rag.citations import MarkerFilter, attribute_by_overlap, cited_indices
from rag.embedding import Embedder
from rag.errors import InvalidRequestError, MaxTokensTooLargeError
from rag.generation import GenerationEngine, GenerationParams
from rag.packing import pack
from rag.prompting import ContextSource, PromptContext, build_messages, select_context
from rag.retrieval import Retriever
from rag.rewrite import standalone_query
from rag.schemas import Answer, Citation, RetrievedChunk, SearchFilters, Timings, Usage
from rag.settings import Settings

SNIPPET_CHARS = 300


@dataclass
class TextDelta:
    text: str


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
        for event in self.stream(question, **kwargs):
            if isinstance(event, Answer):
                return event
        raise RuntimeError("answer stream ended without a final answer")  # pragma: no cover

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
    ) -> Iterator[TextDelta | Answer]:
        """Retrieve for ``identity`` (None: public documents only), then generate. The model only ever sees
        chunks that identity may read, so neither the answer nor its citations can leak another document.
        With a chat ``history``, a follow-up is first rewritten into a standalone query (``rag.rewrite``)."""
        started = time.perf_counter()
        asked = question
        question = standalone_query(self.settings.retrieval.rewrite, asked, history, self.engine)
        chunks = self.retriever.retrieve(question, top_k, identity=identity, filters=filters)
        relevant = [c for c in chunks if c.score >= self.settings.retrieval.min_score]
        if self.settings.prompt.pack_context:
            relevant = pack(relevant, self.settings.prompt.duplicate_threshold)
        context = select_context(question, relevant, self.embedder, self.settings.prompt) if relevant else None
        retrieved = time.perf_counter()
        timings = Timings(retrieval_ms=_ms(retrieved - started))
        params = params or self.params()
        if context is None or not context.sources:
            refusal = self.settings.prompt.refusal
            yield TextDelta(refusal)
            timings.total_ms = _ms(time.perf_counter() - started)
            yield self._final(asked, refusal, False, [], chunks, timings, Usage(), question)
            return

        context = self._fit_window(question, context, params.max_new_tokens)
        generation = self.engine.stream(build_messages(question, context), params, cancel)
        # Only numbers that were shown to the model are valid markers; in sentences mode there are none.
        markers = MarkerFilter({s.index for s in context.sources} if context.numbered else set())
        parts: list[str] = []
        for piece in generation:
            text = markers.feed(piece)
            if text:
                parts.append(text)
                yield TextDelta(text)
        tail = markers.flush()
        answer = ("".join(parts) + tail).strip()
        found = bool(answer) and self.settings.prompt.refusal.lower().rstrip(".") not in answer.lower()
        suffix, attributed = "", "model"
        if found and not cited_indices(answer):
            suffix, attributed = attribute_by_overlap(answer, context.sources), "overlap"
            if not suffix:
                # The answer shares no words with any source: cite the passage the model was given first.
                best = max(context.sources, key=lambda s: s.score)
                suffix, attributed = f" [{best.index}]", "context"
        if tail or suffix:
            yield TextDelta(tail + suffix)
        citations = self._citations(answer + suffix, context.sources, attributed) if found else []
        timings.generation_ms = _ms((generation.finished_at or time.perf_counter()) - retrieved)
        if generation.first_token_at is not None:
            timings.time_to_first_token_ms = _ms(generation.first_token_at - started)
        timings.total_ms = _ms(time.perf_counter() - started)
        usage = Usage(prompt_tokens=generation.prompt_tokens, completion_tokens=generation.completion_tokens)
        yield self._final(asked, answer + suffix, found, citations, chunks, timings, usage, question)

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
            context = PromptContext(context.sources[:-1], context.sentences, context.mode)
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

    @staticmethod
    def _citations(answer: str, sources: list[ContextSource], attributed: str) -> list[Citation]:
        by_index = {s.index: s for s in sources}
        citations = []
        for n in cited_indices(answer):
            source = by_index.get(n)
            if source is None:
                continue
            chunk = source.chunk
            citations.append(
                Citation(
                    index=n,
                    chunk_id=chunk.id,
                    document_id=str(chunk.metadata.get("doc_id", "")),
                    source=chunk.source,
                    title=chunk.title,
                    page=chunk.page,
                    heading=chunk.heading,
                    snippet=(source.best_sentence or source.text)[:SNIPPET_CHARS],
                    score=round(chunk.score, 4),
                    attributed=attributed,
                )
            )
        return citations
