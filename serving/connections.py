"""Connection limits for `rag serve`: slow or idle clients are cut off, and one address cannot hold every connection.

uvicorn closes an idle keep-alive connection, but a fresh connection that sends nothing, a request head trickled a
byte at a time or a body at a byte every few seconds keeps a connection (and its buffers) for as long as the client
likes, and it caps no client's number of connections. ``LimitedHttpProtocol`` adds, per connection:

- idle: nothing received, before the first request or between requests: closed after
  ``server.keep_alive_timeout_s`` (uvicorn's own timer, also armed when the connection opens);
- head: the request line and headers must be complete within ``server.header_timeout_s`` of their first byte;
- body: within ``server.body_timeout_s`` plus 1 s per ``server.body_min_bytes_per_s`` received, so a big upload on
  a slow line goes on while a trickle is cut off. Time the app spends not reading (uvicorn stops reading then) or
  a client spends waiting for ``100 Continue`` does not count;
- at most ``server.max_connections_per_client`` open connections per client address.

A late head or body gets a 408 problem+json and the connection is closed (a body cut off after the app has started
its response is just closed; the app sees a disconnect). A connection over the per-address cap gets a 429 and is
closed. How long the server takes to answer (a long stream) is not limited here.

Both `rag serve` and the tests' loopback server take their uvicorn options from ``connection_options``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from rag.errors import RagError, RequestTimeoutError, TooManyConnectionsError
from rag.settings import ServerSettings
from serving.problems import problem_body

log = logging.getLogger(__name__)

LINGER_S = 2.0  # a refused connection is half-closed, then closed after this, so the client can read the answer


@dataclass
class ConnectionLimits:
    keep_alive_s: float
    header_s: float
    body_s: float
    body_min_rate: int
    per_client: int
    open_by_client: dict[str, int] = field(default_factory=dict)  # touched on the event loop only

    @classmethod
    def from_settings(cls, server: ServerSettings) -> ConnectionLimits:
        return cls(
            server.keep_alive_timeout_s,
            server.header_timeout_s,
            server.body_timeout_s,
            server.body_min_bytes_per_s,
            server.max_connections_per_client,
        )


def connection_options(server: ServerSettings, identity_proxy: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``/``uvicorn.Config``: the protocol with our limits, the timeouts.

    With ``identity_proxy`` (``auth.proxy.trusted`` set) uvicorn keeps the TCP peer's address: its proxy-headers
    option would take it from X-Forwarded-For, which a client on a trusted-for-forwarding address can write."""
    limits = ConnectionLimits.from_settings(server)
    protocol = type("LimitedHttpProtocol", (LimitedHttpProtocol,), {"limits": limits})
    options: dict[str, Any] = {
        "http": protocol,
        "timeout_keep_alive": server.keep_alive_timeout_s,
        "timeout_graceful_shutdown": server.shutdown_timeout_s,
    }
    if identity_proxy:
        options["proxy_headers"] = False
    return options


def raw_problem(error: RagError, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole problem+json response with ``Connection: close``, for answers given before any app runs."""
    body = json.dumps(problem_body(error.status, error.code, error.title, error.message)).encode()
    head = [STATUS_LINE[error.status]]
    for name, value in default_headers:
        head += [name, b": ", value, b"\r\n"]
    head += [
        b"content-type: application/problem+json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n\r\n",
    ]
    return b"".join(head) + body


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head, body and idle deadlines and a per-address connection cap."""

    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._reading: str | None = None  # "head" or "body" while a request is arriving; None otherwise
        self._body_since = 0.0
        self._body_bytes = 0
        self._counted_host: str | None = None
        self._refused = False

    # -- connection -------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        host = self.client[0] if self.client else None
        if host is not None and self.limits.per_client:
            held = self.limits.open_by_client.get(host, 0)
            if held >= self.limits.per_client:
                self._refuse_connection(host)
                return
            self.limits.open_by_client[host] = held + 1
            self._counted_host = host
        # uvicorn arms its idle timer only after a response; a connection that never sends a byte gets it too.
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._clear_deadline()
        if self._counted_host is not None:
            left = self.limits.open_by_client.get(self._counted_host, 1) - 1
            if left > 0:
                self.limits.open_by_client[self._counted_host] = left
            else:
                self.limits.open_by_client.pop(self._counted_host, None)
            self._counted_host = None
        super().connection_lost(exc)

    def _refuse_connection(self, host: str) -> None:
        self._refused = True
        cap = self.limits.per_client
        log.warning("refused a connection from %s: it holds %d already (server.max_connections_per_client)", host, cap)
        detail = (
            f"this address has {cap} connections open, the most this server allows one client "
            "(server.max_connections_per_client): reuse or close connections, then retry"
        )
        answer = raw_problem(TooManyConnectionsError(detail), self._default_headers())
        self.transport.write(answer)
        # Half-close and keep reading (and discarding): closing at once with the client's request unread would
        # reset the connection and lose the answer.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._reading is None and (self.cycle is None or self.cycle.response_complete):
            # The first byte of a request (or of stray line breaks on an idle connection): the head's clock starts.
            self._start_head()
        super().data_received(data)

    # -- parser callbacks ------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._reading != "head":  # a pipelined request, begun while the one before is being answered
            self._start_head()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.parser.should_upgrade() and self._should_upgrade():  # a WebSocket: no longer an HTTP request
            self._clear_deadline()
            self._reading = None
            return
        self._reading = "body"
        self._body_since = time.monotonic()
        self._body_bytes = 0
        self._arm(self.limits.body_s, self._body_late)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._clear_deadline()
        self._reading = None
        super().on_message_complete()

    # -- deadlines -------------------------------------------------------------------------------------------

    def _start_head(self) -> None:
        self._reading = "head"
        self._arm(self.limits.header_s, self._head_late)

    def _arm(self, seconds: float, callback: Any) -> None:
        self._clear_deadline()
        self._deadline = self.loop.call_later(seconds, callback)

    def _clear_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_late(self) -> None:
        self._deadline = None
        seconds = self.limits.header_s
        self._time_out(
            f"the request line and headers took longer than {seconds:g} s (server.header_timeout_s): "
            "send the whole request head at once"
        )

    def _body_late(self) -> None:
        self._deadline = None
        now = time.monotonic()
        cycle = self.cycle
        if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
            # The app is not reading yet, or the client waits for our 100 Continue: not the client's delay.
            self._body_since, self._body_bytes = now, 0
            self._arm(self.limits.body_s, self._body_late)
            return
        rate = self.limits.body_min_rate
        allowed = self.limits.body_s + (self._body_bytes / rate if rate else 0.0)
        left = allowed - (now - self._body_since)
        if left > 0:
            self._arm(left, self._body_late)
            return
        floor = f" plus 1 s per {rate} bytes (server.body_min_bytes_per_s)" if rate else ""
        self._time_out(
            f"the request body came too slowly: {self._body_bytes} bytes in {now - self._body_since:.0f} s; this "
            f"server allows {self.limits.body_s:g} s (server.body_timeout_s){floor}: send the body at once"
        )

    def _time_out(self, detail: str) -> None:
        if self.transport.is_closing():
            return
        log.info("closed the connection from %s: %s", self.client[0] if self.client else "a client", detail)
        cycle = self.cycle
        if self._reading == "body":  # ``cycle`` is this request's: answer unless the app has begun to
            can_answer = not cycle.response_started
            cycle.disconnected = True  # the app waiting for the body sees a disconnect; what it sends is dropped
            cycle.message_event.set()
        else:  # a late head: answer unless the response to an earlier (pipelined) request is still going
            can_answer = cycle is None or cycle.response_complete
        if can_answer:
            self.transport.write(raw_problem(RequestTimeoutError(detail), self._default_headers()))
        self._reading = None
        self.transport.close()

    def _default_headers(self) -> list[tuple[bytes, bytes]]:
        return list(self.server_state.default_headers)
