"""A small threaded HTTP/1.1 server on 127.0.0.1 that the vendor fakes build on.

A vendor fake supplies one ``route(received, exchange)`` function; this module does the
HTTP: keep-alive connections (so a client's connection pool is exercised as in production),
Nagle off and one write per response (so the router benchmark measures our code, not TCP
delayed-ACK stalls), chunked server-sent-event streams that can be cut mid-answer, and a
record of every request received so a test can assert on what the client sent.
"""

from __future__ import annotations

import json
from collections import deque
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # the parsed JSON body, or None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class Exchange:
    """The reply side of one request: a JSON answer or a chunked event stream."""

    def __init__(self, handler: BaseHTTPRequestHandler, stopping: threading.Event):
        self._handler = handler
        self._stopping = stopping

    def wait(self, seconds: float) -> None:
        """Sleep, but wake at once when the server shuts down."""
        self._stopping.wait(seconds)

    def json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        head = self._head(status, {"content-type": "application/json", "content-length": str(len(body)),
                                   **(headers or {})})
        self._handler.wfile.write(head + body)

    def body(self, status: int, data: bytes, headers: Mapping[str, str] | None = None) -> None:
        """A non-JSON answer: audio, an image, an HTML error page."""
        head = self._head(status, {"content-type": "application/octet-stream",
                                   "content-length": str(len(data)), **(headers or {})})
        self._handler.wfile.write(head + data)

    def start_stream(self, headers: Mapping[str, str] | None = None) -> None:
        self._handler.wfile.write(self._head(200, {
            "content-type": "text/event-stream", "cache-control": "no-cache",
            "transfer-encoding": "chunked", **(headers or {}),
        }))

    def event(self, data: str, name: str | None = None) -> None:
        """One server-sent event, as one HTTP chunk."""
        text = (f"event: {name}\n" if name else "") + f"data: {data}\n\n"
        payload = text.encode()
        self._handler.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))

    def end_stream(self) -> None:
        self._handler.wfile.write(b"0\r\n\r\n")

    def abort(self) -> None:
        """Drop the connection mid-body, as a crashed upstream or a cut network would."""
        self._handler.close_connection = True
        self._handler.connection.shutdown(socket.SHUT_RDWR)

    def _head(self, status: int, headers: Mapping[str, str]) -> bytes:
        reason = self._handler.responses.get(status, ("",))[0]
        lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
        return "\r\n".join(lines).encode("latin-1")


Route = Callable[[Received, Exchange], None]


class WireServer:
    """``with WireServer(route) as server:`` serves on ``server.origin`` until the block ends."""

    def __init__(self, route: Route, decode: Callable[[bytes], Any] | None = None):
        self._decode = decode or (lambda raw: json.loads(raw) if raw else None)  # Stripe sends forms, not JSON
        self.received: list[Received] = []
        self.connections = 0  # TCP connections accepted: shows whether clients reuse them
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler_class(route))
        self.origin = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def __enter__(self) -> WireServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self, route: Route) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                with server._lock:
                    server.connections += 1

            def handle(self) -> None:
                try:
                    super().handle()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client hung up: between requests that is how keep-alive ends

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def do_PUT(self) -> None:
                self._serve()

            def do_DELETE(self) -> None:
                self._serve()

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                received = Received(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=server._decode(raw),
                )
                with server._lock:
                    server.received.append(received)
                try:
                    route(received, Exchange(self, server._stopping))
                except (BrokenPipeError, ConnectionResetError):
                    # The client gave up first (its timeout): nothing left to answer.
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a handler sleeping past a client's timeout must not hold up teardown


class QueuedFake:
    """A vendor fake on a ``WireServer`` that answers each request with the next queued reply.

    Subclasses set ``path`` (appended to the origin to make ``base_url``) and implement
    ``_route``, taking their reply and its serial number from ``next_reply()``.
    """

    path = ""

    def __init__(self, default: Any):
        self.default = default
        self._queue: deque[Any] = deque()
        self._lock = threading.Lock()
        self._serial = 0
        self._wire = WireServer(self._route)
        self.base_url = f"{self._wire.origin}{self.path}"

    def __enter__(self):
        self._wire.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._wire.__exit__(*exc)

    def push(self, *replies: Any) -> None:
        """Queue answers for the next requests, in order."""
        self._queue.extend(replies)

    @property
    def received(self) -> list[Received]:
        return self._wire.received

    @property
    def connections(self) -> int:
        return self._wire.connections

    def next_reply(self) -> tuple[Any, int]:
        with self._lock:
            reply = self._queue.popleft() if self._queue else self.default
            self._serial += 1
            return reply, self._serial

    def _route(self, req: Received, ex: Exchange) -> None:
        raise NotImplementedError
