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
    """The HTTP server (engine/sidecar/http.py), when this build has it."""
    try:
        from engine.sidecar import http
    except ModuleNotFoundError as exc:
        if exc.name != "engine.sidecar.http":
            raise
        log.info("engine.sidecar.http is not in this build: no HTTP server")
        return None
    from engine.config import get_settings

    settings = get_settings()
    host = getattr(settings, "sidecar_host", "127.0.0.1")
    port = getattr(settings, "sidecar_port", 8502)
    return http.start(host, port, health=sidecar.health)
