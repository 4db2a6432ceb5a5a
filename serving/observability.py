"""What the server tells its operators: Prometheus metrics, request ids in JSON logs, and an append-only audit log.

- ``/metrics`` (Prometheus text format): requests by route, method and status; request latency, time to first
  token, generation tokens/s and retrieval latency histograms; generated tokens; and, read at scrape time, the
  generation queue depth and active requests, readiness, chunks in the store and ingest progress.
- Every request gets an id (the caller's ``X-Request-ID`` if it is sane, else a new one), returned in the
  ``X-Request-ID`` header and put on every log line written while it is handled.
- The audit log (``data_dir/audit/audit.jsonl``) gets one line per answered question: who (key, user, groups),
  when, the route, the question (unless ``server.audit_questions`` is off), and the ids of the documents that
  were retrieved and cited; and one per document fetch, refused ones (404) included. It is only ever appended to.
  A question asked in a saved conversation is logged as the conversation's id and the question's SHA-256.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from pythonjsonlogger.json import JsonFormatter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag.schemas import Answer

log = logging.getLogger(__name__)

# -- request ids -----------------------------------------------------------------------------------------------

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Root logging for `rag serve`: one JSON object per line (or plain text), each with the request id."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}{request_id}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


# -- metrics ---------------------------------------------------------------------------------------------------

# Counters and histograms live for the process; the live gauges are read from each app's state at scrape time.
PROCESS = CollectorRegistry(auto_describe=True)
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)
REQUESTS = Counter(
    "rag_http_requests", "HTTP requests by route, method and status.", ["route", "method", "status"], registry=PROCESS
)
LATENCY = Histogram(
    "rag_http_request_duration_seconds",
    "Time from request to the end of the response (streams: the last event), by route.",
    ["route"],
    buckets=_LATENCY_BUCKETS,
    registry=PROCESS,
)
TTFT = Histogram(
    "rag_time_to_first_token_seconds",
    "Time from the question to the first generated token (retrieval included).",
    buckets=_LATENCY_BUCKETS,
    registry=PROCESS,
)
TOKENS_PER_SECOND = Histogram(
    "rag_generation_tokens_per_second",
    "Generated tokens per second of generation, per request.",
    buckets=(1, 2.5, 5, 10, 15, 20, 30, 50, 75, 100, 200, 400),
    registry=PROCESS,
)
GENERATED_TOKENS = Counter("rag_generated_tokens", "Tokens generated, all requests.", registry=PROCESS)
PROMPT_TOKENS = Counter("rag_prompt_tokens", "Prompt tokens processed, all requests.", registry=PROCESS)
RETRIEVAL = Histogram(
    "rag_retrieval_duration_seconds",
    "Query embedding, hybrid search and access filter, per question.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=PROCESS,
)


def record_answer(answer: Answer) -> None:
    t = answer.timings
    if t.retrieval_ms:
        RETRIEVAL.observe(t.retrieval_ms / 1000)
    if t.time_to_first_token_ms is not None:
        TTFT.observe(t.time_to_first_token_ms / 1000)
    if answer.tokens_per_second:
        TOKENS_PER_SECOND.observe(answer.tokens_per_second)
    GENERATED_TOKENS.inc(answer.usage.completion_tokens)
    PROMPT_TOKENS.inc(answer.usage.prompt_tokens)


class LiveState:
    """Gauges read at scrape time from one app: generation queue, readiness, store and ingest jobs."""

    def __init__(self, app_state: Any) -> None:
        self.state = app_state

    def collect(self) -> Iterable[GaugeMetricFamily]:
        container = self.state.container
        yield GaugeMetricFamily("rag_ready", "1 when models and store are loaded.", value=float(container.ready))
        info = container.engine.load_info()
        yield GaugeMetricFamily(
            "rag_generation_queue_depth", "Requests waiting for a place in the batch.", value=info["queued"]
        )
        yield GaugeMetricFamily(
            "rag_generation_active", "Requests being generated now (batch occupancy).", value=info["active"]
        )
        yield GaugeMetricFamily("rag_generation_slots", "Batch size: requests generated together.", value=info["slots"])
        if container.ready:
            yield GaugeMetricFamily("rag_store_chunks", "Chunks in the vector store.", value=container.store.count())
        jobs = getattr(self.state, "jobs", None)
        if jobs is not None:
            by_state = GaugeMetricFamily("rag_ingest_jobs", "Ingest jobs by state.", labels=["state"])
            files = GaugeMetricFamily(
                "rag_ingest_files", "Files of unfinished ingest jobs: total and done so far.", labels=["kind"]
            )
            counts: dict[str, int] = {}
            total = done = 0
            for job in jobs.list():
                counts[job.state] = counts.get(job.state, 0) + 1
                if job.state in ("queued", "running"):
                    total += job.total_files or 0
                    done += job.files_done
            for state, count in sorted(counts.items()):
                by_state.add_metric([state], count)
            files.add_metric(["total"], total)
            files.add_metric(["done"], done)
            yield by_state
            yield files


def metrics_text(app_state: Any) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LiveState(app_state))
    return generate_latest(PROCESS) + generate_latest(registry), CONTENT_TYPE_LATEST


class ObservabilityMiddleware:
    """Request id, access log line and request metrics, for every HTTP request (streams: until the last byte)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _SANE_ID.match(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            seconds = time.perf_counter() - started
            state = scope.get("state") or {}
            # A stream that failed after its 200 went out counts as the failure it was, not as a success.
            failed = state.get("stream_failed")
            code, error = failed if failed else (status["code"], None)
            REQUESTS.labels(template, scope["method"], str(code)).inc()
            LATENCY.labels(template).observe(seconds)
            principal = getattr(state.get("principal"), "name", None)
            log.info(
                "%s %s %d %.0f ms%s",
                scope["method"],
                scope["path"],
                code,
                seconds * 1000,
                f" (stream failed after its 200: {error})" if error else "",
                extra={
                    "route": template,
                    "status": code,
                    "ms": round(seconds * 1000, 1),
                    "key": principal,
                    **({"error": error, "sent_status": status["code"]} if error else {}),
                },
            )
            request_id.reset(token)


def stream_failed(request: Any, status: int, code: str) -> None:
    """Note that a response's stream failed after its status line went out: the access log line and the request
    metrics then count it with ``status`` (and name ``code``) instead of the 200 that was sent."""
    request.state.stream_failed = (status, code)


# -- audit log -------------------------------------------------------------------------------------------------


class AuditLog:
    """One JSON line per answered question, appended (O_APPEND) and flushed at once; never rewritten."""

    def __init__(self, path: Path, questions: bool = True) -> None:
        self.path = path
        self.questions = questions
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def record(
        self,
        *,
        principal: Any,
        route: str,
        question: str = "",
        retrieved: Iterable[str] = (),
        cited: Iterable[str] = (),
        outcome: str = "answered",
        **extra: Any,
    ) -> None:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "request_id": request_id.get(),
            "key": principal.name,
            "user": principal.user,
            "groups": sorted(principal.groups),
            "route": route,
            "outcome": outcome,
        }
        if self.questions and question:
            entry["question"] = question
        entry["retrieved"] = list(dict.fromkeys(retrieved))
        entry["cited"] = list(dict.fromkeys(cited))
        entry.update(extra)
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            if self._fd >= 0:
                os.write(self._fd, line)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def finish_answer(
    audit: AuditLog | None,
    principal: Any,
    route: str,
    answer: Answer,
    outcome: str = "answered",
    conversation: str | None = None,
) -> None:
    """Metrics and the audit line for one answered question."""
    record_answer(answer)
    if audit is not None:
        entry = {"question": answer.question, "retrieval_query": answer.retrieval_query}
        audit.record(
            principal=principal,
            route=route,
            retrieved=(str(c.metadata.get("doc_id", "")) for c in answer.chunks),
            cited=(c.document_id for c in answer.citations),
            outcome=outcome,
            found=answer.found,
            **in_conversation(entry, conversation),
        )


def in_conversation(entry: dict[str, Any], conversation: str | None) -> dict[str, Any]:
    """An audit entry for a question asked in a saved conversation: the conversation's id and the question's
    SHA-256 instead of its text (and of the rewritten query), so deleting the conversation leaves no copy here."""
    if conversation is None:
        return entry
    question = entry.get("question") or ""
    kept = {k: v for k, v in entry.items() if k not in ("question", "retrieval_query")}
    return kept | {"conversation": conversation, "question_sha256": hashlib.sha256(question.encode()).hexdigest()}
