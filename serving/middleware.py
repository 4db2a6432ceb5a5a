"""Request body limits: a body over its cap gets a 413 as it arrives, before it is parsed, spooled or held in memory.

- JSON and other bodies: at most ``server.max_body_kb``. The declared Content-Length is checked first; a body
  without one (chunked) is counted as it arrives and cut off at the limit.
- Uploads (multipart, to the admin upload route): the caller's key is checked from the headers before a byte of the
  body is read (FastAPI parses a multipart body, spooling files over 1 MB to a temporary file, before any
  dependency runs), then each file part is counted as it arrives and cut off past ``server.max_upload_mb``.

A body cut off mid-way makes the app's body parser fail (FastAPI answers 400 "error parsing the body"); that answer
is dropped and the 413 sent instead.
"""

from __future__ import annotations

import re

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag.errors import PayloadTooLargeError, RagError, UploadTooLargeError
from serving.auth import authenticate, require_admin
from serving.problems import rag_problem

UPLOAD_PATHS = ("/v1/admin/ingest/uploads",)
_BOUNDARY = re.compile(r'boundary="?([^";,]{1,200})"?', re.IGNORECASE)
_FILENAME = re.compile(rb'filename="([^"]{0,200})"', re.IGNORECASE)
_MAX_PART_HEAD = 16 * 1024  # part headers longer than this are left to the multipart parser to refuse


class _TooLarge(Exception):
    def __init__(self, response: JSONResponse) -> None:
        self.response = response


class _Meter:
    """Counts a body as it arrives; ``feed`` raises ``_TooLarge`` with the answer once it is over its cap."""

    def feed(self, chunk: bytes) -> None:
        raise NotImplementedError


class _TotalMeter(_Meter):
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.seen = 0

    def feed(self, chunk: bytes) -> None:
        self.seen += len(chunk)
        if self.seen > self.max_bytes:
            raise _TooLarge(body_too_large(self.max_bytes, f"over {self.max_bytes:,} bytes"))


class _PartMeter(_Meter):
    """The size of each part of a multipart body, found by scanning for the boundary (the parser downstream does the
    real parsing; this only counts)."""

    def __init__(self, boundary: bytes, max_bytes: int, limit_mb: float) -> None:
        self.delimiter = b"\r\n--" + boundary
        self.max_bytes = max_bytes
        self.limit_mb = limit_mb
        self.pending = b"\r\n"  # the body opens with the delimiter less its line break
        self.in_head = False  # between a delimiter and the blank line that ends the part's headers
        self.in_data = False  # in a part's content (not in the preamble)
        self.size = 0
        self.filename = ""

    def feed(self, chunk: bytes) -> None:
        data, pos = self.pending + chunk, 0
        while True:
            if self.in_head:
                end = data.find(b"\r\n\r\n", pos)
                if end < 0 and len(data) - pos <= _MAX_PART_HEAD:
                    self.pending = data[pos:]
                    return
                head = data[pos:end] if end >= 0 else b""
                named = _FILENAME.search(head)
                self.filename = named.group(1).decode("utf-8", "replace").rsplit("/", 1)[-1] if named else ""
                self.in_head, self.in_data, self.size = False, True, 0
                pos = end + 4 if end >= 0 else pos
                continue
            found = data.find(self.delimiter, pos)
            stop = found if found >= 0 else max(pos, len(data) - len(self.delimiter) + 1)
            if self.in_data:
                self.size += stop - pos
                if self.size > self.max_bytes:
                    raise _TooLarge(self._refusal())
            if found < 0:
                self.pending = data[stop:]
                return
            self.in_head, self.in_data = True, False
            pos = found + len(self.delimiter)

    def _refusal(self) -> JSONResponse:
        name = "".join(c for c in self.filename if c.isprintable())[:100] or "a file in the upload"
        return rag_problem(
            UploadTooLargeError(
                f"{name}: the file is over the {self.limit_mb:g} MB upload limit: split it, or raise "
                "server.max_upload_mb"
            )
        )


def body_too_large(max_bytes: int, size: str) -> JSONResponse:
    return rag_problem(
        PayloadTooLargeError(
            f"the request body is {size}; this server accepts at most {max_bytes // 1024} KB (server.max_body_kb): "
            "send less text or fewer messages"
        )
    )


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, max_upload_mb: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_mb = max_upload_mb

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if scope["path"] in UPLOAD_PATHS and scope["method"] == "POST" and _serves_uploads(scope):
            # In a thread: a first token check or directory read waits on the network, never on the event loop.
            refused = await run_in_threadpool(_refuse_caller, scope)
            if refused is not None:  # before the body: nothing of it is read, parsed or written anywhere
                await refused(scope, receive, send)
                return
            boundary = _BOUNDARY.search(headers.get("content-type", ""))
            if boundary is not None:
                limit = int(self.max_upload_mb * 1024 * 1024)
                meter = _PartMeter(boundary.group(1).encode("latin-1"), limit, self.max_upload_mb)
                await _metered(self.app, meter, scope, receive, send)
                return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await body_too_large(self.max_bytes, f"{int(declared):,} bytes")(scope, receive, send)
            return
        await _metered(self.app, _TotalMeter(self.max_bytes), scope, receive, send)


def _serves_uploads(scope: Scope) -> bool:
    """The upload route exists (server.admin_api); without it the router's 404 comes, and reads no body."""
    return getattr(scope["app"].state, "jobs", None) is not None


def _refuse_caller(scope: Scope) -> JSONResponse | None:
    """The route's own check (an admin key; 401, 403 or 429), from the headers alone."""
    try:
        require_admin(authenticate(Request(scope)))
    except RagError as exc:
        return rag_problem(exc)
    return None


async def _metered(app: ASGIApp, meter: _Meter, scope: Scope, receive: Receive, send: Send) -> None:
    refusal: JSONResponse | None = None
    started = False

    async def counted() -> Message:
        nonlocal refusal
        message = await receive()
        if message["type"] == "http.request":
            try:
                meter.feed(message.get("body", b""))
            except _TooLarge as too_large:
                refusal = too_large.response
                raise
        return message

    async def answer(message: Message) -> None:
        nonlocal started
        if refusal is not None:  # the app's answer to a body cut off under it (FastAPI: 400): ours replaces it
            return
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, counted, answer)
    except Exception:
        if refusal is None:
            raise
        # the app let the cut-off body's error through rather than answering: the refusal follows all the same
    if refusal is not None and not started:
        await refusal(scope, receive, send)
