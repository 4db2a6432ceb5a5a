"""Request body limit: a body over ``server.max_body_kb`` gets a 413 before it is parsed or held in memory.

The declared Content-Length is checked first; a body without one (chunked) is counted as it arrives and cut off
at the limit. Uploads (multipart, to the admin upload route) have their own per-file cap, ``server.max_upload_mb``.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.problems import problem

UPLOAD_PATHS = ("/v1/admin/ingest/uploads",)


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _refuse(self, size: str) -> JSONResponse:
        kb = self.max_bytes // 1024
        return problem(
            413,
            "body_too_large",
            "Request body too large",
            f"the request body is {size}; this server accepts at most {kb} KB (server.max_body_kb): send less text "
            "or fewer messages",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UPLOAD_PATHS:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(f"{int(declared):,} bytes")(scope, receive, send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked_send)
        except _TooLarge:
            if started:  # pragma: no cover - apps read the body before they answer
                raise
            await self._refuse(f"over {self.max_bytes:,} bytes")(scope, receive, send)
