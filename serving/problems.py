"""Every error becomes RFC 9457 problem+json; on /v1 routes it also carries OpenAI's `error` object."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.errors import InvalidRequestError, RagError

log = logging.getLogger(__name__)

PROBLEM_BASE = "https://errors.private-rag.invalid/"
OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    422: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


INTERNAL_DETAIL = "the server hit an unexpected error; it has been logged: retry, or tell the admins"


def problem_body(status: int, code: str, title: str, detail: str, *, param: str | None = None) -> dict:
    return {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        # The OpenAI SDKs read this member to build their exception messages.
        "error": {"message": detail, "type": OPENAI_TYPES.get(status, "server_error"), "code": code, "param": param},
    }


def problem(
    status: int, code: str, title: str, detail: str, *, param: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = problem_body(status, code, title, detail, param=param)
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


def rag_problem(exc: RagError) -> JSONResponse:
    """The response for one of our errors; also used by middleware, which runs outside the app's handlers."""
    retry_after = getattr(exc, "retry_after", 5 if exc.status == 503 else None)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="private-rag"'
    return problem(exc.status, exc.code, exc.title, exc.message, param=exc.detail.get("param"), headers=headers or None)


def stream_problem(exc: Exception) -> dict:
    """The problem body for an error raised after a stream's 200 went out: sent as the stream's last event, where
    the OpenAI SDKs read its ``error`` member and raise it (an unexpected error is logged, never shown)."""
    if isinstance(exc, RagError):
        return problem_body(exc.status, exc.code, exc.title, exc.message, param=exc.detail.get("param"))
    log.error("unhandled error in a stream", exc_info=exc)
    return problem_body(500, "internal_error", "Internal error", INTERNAL_DETAIL)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RagError)
    async def rag_error(_: Request, exc: RagError) -> JSONResponse:
        return rag_problem(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        message = str(first["msg"]).removeprefix("Value error, ")
        if first.get("type") == "extra_forbidden":  # a misspelt or unsupported field is refused, never ignored
            message = "unknown field: remove it or fix its name (GET /openapi.json lists the fields)"
        detail = f"{where}: {message}" if where else message
        return rag_problem(
            InvalidRequestError(f"{detail}: fix the request body and retry", detail={"param": where or None})
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return problem(exc.status_code, code, str(exc.detail), str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return problem(500, "internal_error", "Internal error", INTERNAL_DETAIL)
