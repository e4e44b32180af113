"""``python -m engine sidecar``: run a ``Sidecar`` until SIGTERM or SIGINT, then shut it down gracefully."""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 30.0


def add_arguments(parser) -> None:
    parser.add_argument("--workers", type=int, default=None,
                        help="workflow worker threads (default: METERBOOK_SIDECAR_WORKERS, 2)")
    parser.add_argument("--no-http", action="store_true", help="do not start the HTTP server (hooks, health)")
    parser.add_argument("--stop-timeout", type=float, default=STOP_TIMEOUT_S,
                        help="on SIGTERM, how long running work may finish before it is handed back (s)")


def run(args) -> int:
    from engine import migrate
    from engine.sidecar.process import Sidecar

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # a line per job run otherwise
    migrate.upgrade()
    stopping = threading.Event()

    def on_signal(signum, _frame) -> None:
        log.info("Received %s: shutting down", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sidecar = Sidecar(workers=args.workers).start()
    server = None if args.no_http else _start_http(sidecar)
    print(f"Sidecar {sidecar.holder} running; SIGTERM or Ctrl-C stops it.", flush=True)
    try:
        while not stopping.wait(1.0):
            pass
    finally:
        if server is not None:
            server.stop()
        sidecar.stop(args.stop_timeout)
    return 0


def _start_http(sidecar):
    """The HTTP server (webhooks, Stripe, health). A port already taken (another sidecar on this host)
    leaves this one without it: scheduling and workers matter more than a second listener."""
    from engine.config import get_settings
    from engine.sidecar import http

    settings = get_settings()
    try:
        server = http.start(settings.sidecar_host, settings.sidecar_port, health=sidecar.health)
    except http.SidecarHttpError as exc:
        log.warning("%s This sidecar runs without its HTTP server.", exc)
        print(f"warning: {exc} This sidecar runs without its HTTP server.", flush=True)
        return None
    print(f"Webhooks and health at {server.url} (POST /hooks/…, POST /stripe/webhook, GET /health).", flush=True)
    return server
