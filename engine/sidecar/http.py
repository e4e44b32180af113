"""The sidecar's HTTP server: webhooks that start workflow runs, Stripe's webhook, and the health check.

``start(host, port, *, health) -> Server`` serves from a stdlib ``ThreadingHTTPServer`` in a
daemon thread (one thread per request); ``server.port`` is the bound port (ask for 0 to get a
free one) and ``server.stop()`` stops accepting, lets requests in flight finish for a few
seconds (a caller waiting on a run is answered at once with what is known) and closes.

    POST /hooks/<workflow id>/<token>           202 {"run_id", "status"}; 200 for a repeated Idempotency-Key
         /hooks/<workflow id>/<token>/wait      or ?wait=N: wait up to N s (at most 60; /wait alone: 30)
                                                200 {"run_id", "status", "outputs" | "error"} once finished,
                                                else 202 with the run id
    POST /stripe/webhook                        200 {"received": true, "outcome"}; 400 forged or stale;
                                                503 Stripe unreachable or billing not configured
    GET  /health                                health() as JSON: 200 when its "ok" is true, else 503

Every answer is JSON; errors are ``{"error": "..."}`` with the engine's own message, never a
traceback. Bodies are at most 1 MiB (413). Hook URLs carry a bearer token, so every line this
module logs shows only its last four characters.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy.exc import DBAPIError

from engine.billing import stripe_api, webhooks
from engine.billing.limits import PlanLimitReached
from engine.errors import Conflict, InvalidInput, MeterbookError, NotFound, PermissionDenied
from engine.workflows import hooks
from engine.workflows.models import FINISHED

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
DRAIN_LIMIT = 16 * MAX_BODY  # an oversize body up to this is read and dropped, so the client sees the 413
DEFAULT_WAIT_S = 30.0
STOP_GRACE_S = 5.0
HOOK_ROUTE = re.compile(r"^/hooks/([^/]+)/([^/]+?)(/wait)?/?$")
_TOKEN_IN_TEXT = re.compile(r"(/hooks/[^/\s?#\"']*/)([^/\s?#\"']+)")

# (exception, status) in order: the first that matches answers.
STATUS_FOR: list[tuple[type[BaseException], int]] = [
    (hooks.BadSignature, 401),
    (hooks.UnsupportedBody, 415),
    (NotFound, 404),
    (PlanLimitReached, 402),
    (PermissionDenied, 403),
    (Conflict, 409),
    (InvalidInput, 400),
]


class SidecarHttpError(MeterbookError):
    """The server could not listen where it was told to."""


class _HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def mask(text: str) -> str:
    """Any hook URL in ``text`` with its token cut to the last four characters."""
    return _TOKEN_IN_TEXT.sub(lambda m: f"{m[1]}…{m[2][-4:]}", text)


class Server:
    """A running server: ``host``, ``port``, ``url``, and ``stop()``."""

    def __init__(self, httpd: _Server, thread: threading.Thread):
        self._httpd, self._thread = httpd, thread
        self.host, self.port = httpd.server_address[:2]
        self._stopped = False
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop accepting; wait up to ``grace_s`` for requests in flight; close the socket."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._httpd.stopping.set()  # callers waiting on a run are answered now
        self._httpd.shutdown()
        left = self._httpd.wait_idle(grace_s)
        if left:
            log.warning("sidecar HTTP stopped with %d request(s) still running", left)
        self._httpd.server_close()
        self._thread.join(grace_s)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck request never keeps the process alive; stop() waits for the rest
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], health: Callable[[], dict]):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.health = health
        self.stopping = threading.Event()
        self._idle = threading.Condition()
        self._in_flight = 0

    def server_bind(self) -> None:
        # HTTPServer.server_bind also looks up the host's full DNS name, which can stall on a bad resolver.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request, client_address) -> None:
        # Counted here, in the accepting thread, so a request accepted just before shutdown() is waited for.
        with self._idle:
            self._in_flight += 1
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._done()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done()

    def _done(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._in_flight and time.monotonic() < deadline:
                self._idle.wait(max(0.0, deadline - time.monotonic()))
            return self._in_flight


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "Meterbook-sidecar"
    sys_version = ""
    timeout = 15  # seconds a sender may pause while sending: a stalled one holds only its own thread

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    # --- routing ------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        self._started = time.monotonic()
        parts = urlsplit(self.path)
        try:
            if parts.path == "/health":
                self._allow("GET", "HEAD")
                return self._health()
            if parts.path == "/stripe/webhook":
                self._allow("POST")
                return self._stripe()
            found = HOOK_ROUTE.match(parts.path)
            if found:
                self._allow("POST")
                return self._hook(unquote(found[1]), unquote(found[2]), bool(found[3]), parse_qs(parts.query))
            raise _HttpError(404, "There is nothing at this address.")
        except _HttpError as exc:
            self._json(exc.status, {"error": str(exc)}, **getattr(exc, "headers", {}))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the sender went away; nobody to answer
        except MeterbookError as exc:
            self._json(self._status(exc), {"error": str(exc)})
        except DBAPIError:
            log.exception("sidecar HTTP: database error on %s %s", self.command, mask(parts.path))
            self._json(503, {"error": "The database is unavailable; nothing was done. Try again shortly."})
        except Exception:
            log.exception("sidecar HTTP: failed on %s %s", self.command, mask(parts.path))
            self._json(500, {"error": "Internal error; nothing is known to have been done. The sidecar's log says "
                                      "more."})

    def _allow(self, *methods: str) -> None:
        if self.command not in methods:
            exc = _HttpError(405, f"Use {' or '.join(methods)} here.")
            exc.headers = {"Allow": ", ".join(methods)}
            raise exc

    @staticmethod
    def _status(exc: MeterbookError) -> int:
        return next((status for kind, status in STATUS_FOR if isinstance(exc, kind)), 500)

    # --- the routes ---------------------------------------------------------------------------

    def _health(self) -> None:
        try:
            report = self.server.health()
            if not isinstance(report, dict):
                raise TypeError("health() must return a dict")
        except Exception as exc:
            log.exception("sidecar health check failed")
            report = {"ok": False, "error": f"The health check failed ({type(exc).__name__})."}
        self._json(200 if report.get("ok") else 503, report)

    def _stripe(self) -> None:
        body = self._body()
        try:
            result = webhooks.handle_webhook(body, self.headers.get("Stripe-Signature"))
        except webhooks.InvalidWebhook as exc:
            raise _HttpError(400, str(exc)) from None
        except (stripe_api.StripeUnavailable, stripe_api.BillingNotConfigured) as exc:
            raise _HttpError(503, str(exc)) from None  # Stripe delivers again later: the retry does the work
        except stripe_api.BillingError as exc:
            log.warning("Stripe webhook not handled: %s", exc)
            raise _HttpError(500, str(exc)) from None
        self._json(200, {"received": True, "outcome": result.outcome})

    def _hook(self, workflow: str, token: str, wait_path: bool, query: dict[str, list[str]]) -> None:
        wait = self._wait_seconds(query, wait_path)
        body = self._body()
        delivery = hooks.deliver(workflow, token, body, self.headers, content_type=self.headers.get("Content-Type"),
                                 idempotency_key=self.headers.get("Idempotency-Key"),
                                 query={k: v[-1] for k, v in query.items() if k != "wait"})
        run = delivery.run
        if wait:
            status = hooks.wait_for(run.id, wait, self.server.stopping)
            self._json(200 if status in FINISHED else 202, hooks.result_of(run.id))
            return
        self._json(200 if delivery.repeated else 202, {"run_id": run.id, "status": run.status})

    @staticmethod
    def _wait_seconds(query: dict[str, list[str]], wait_path: bool) -> float:
        given = query.get("wait")
        if not given:
            return DEFAULT_WAIT_S if wait_path else 0.0
        try:
            seconds = float(given[-1])
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds < float("inf"):
            raise _HttpError(400, f"wait is a number of seconds from 0 to {hooks.MAX_WAIT_S:g}.")
        return min(seconds, hooks.MAX_WAIT_S)

    # --- reading and answering ----------------------------------------------------------------

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            raise _HttpError(411, "Send the body with a Content-Length (chunked bodies are not accepted).")
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise _HttpError(400, "Content-Length must be a whole number of bytes.") from None
        try:
            if length > MAX_BODY:
                self.close_connection = True
                if length <= DRAIN_LIMIT:  # read and drop it, or the sender may never see the answer
                    left = length
                    while left > 0:
                        chunk = self.rfile.read(min(left, 65536))
                        if not chunk:
                            break
                        left -= len(chunk)
                raise _HttpError(413, f"The body is over {MAX_BODY // 1024} KiB; nothing was done.")
            body = self.rfile.read(length)
        except TimeoutError:
            self.close_connection = True
            raise _HttpError(408, "The body did not arrive in time; nothing was done.") from None
        if len(body) < length:
            self.close_connection = True
            raise _HttpError(400, "The body is shorter than its Content-Length; nothing was done.")
        return body

    def _json(self, status: int, payload: Any, **headers: str) -> None:
        data = json.dumps(payload, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(data)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The library's own refusals (a malformed request line, headers too long) as JSON too."""
        self.close_connection = True
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Error"
        self.log_error("code %d, %s", code, message or phrase)
        self._json(code, {"error": f"{phrase}."})

    # --- logging: tokens masked -------------------------------------------------------------

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        took = (time.monotonic() - self._started) * 1000 if hasattr(self, "_started") else 0.0
        status = code.value if isinstance(code, HTTPStatus) else code
        log.info("%s %s %s %s %.0fms", self.client_address[0], getattr(self, "command", None) or "-",
                 mask(urlsplit(getattr(self, "path", "") or "").path), status, took)

    def log_error(self, format: str, *args: Any) -> None:
        log.warning("%s %s", self.client_address[0], mask(format % args))

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.client_address[0], mask(format % args))


def start(host: str, port: int, *, health: Callable[[], dict]) -> Server:
    """Serve on ``host:port`` (0: any free port) from a daemon thread; returns at once, listening."""
    try:
        httpd = _Server((host, int(port)), health)
    except OSError as exc:
        raise SidecarHttpError(f"The sidecar cannot listen on {host}:{port} ({exc.strerror or exc}); free the port or "
                               "set METERBOOK_SIDECAR_HOST / METERBOOK_SIDECAR_PORT.") from None
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True,
                              name=f"sidecar-http-{httpd.server_address[1]}")
    thread.start()
    server = Server(httpd, thread)
    log.info("sidecar HTTP listening on %s", server.url)
    return server
