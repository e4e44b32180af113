"""Keeps the analytics warehouse exported while Meterbook runs.

Dashboards read the exported Parquet plus the rows not yet exported, which ``warehouse.connect``
reads from the system of record on every page run: without exports that tail grows until it is
the whole ledger. So the process that serves the UI runs one daemon thread that calls
``warehouse.refresh`` every ``INTERVAL_S`` seconds (the sidecar is to host it later).
``refresh`` takes an inter-process lock on the warehouse, so two processes doing this at once
export each row once; a failed export is logged and tried again at the next tick, and the
tail keeps the dashboards right meanwhile.
"""

from __future__ import annotations

import logging
import threading

from analytics import warehouse

INTERVAL_S = 30.0

log = logging.getLogger(__name__)
_lock = threading.Lock()
_thread: threading.Thread | None = None
_stop = threading.Event()


def export_now() -> warehouse.ExportStats:
    """Export what is new, now (``python -m engine export``)."""
    return warehouse.refresh()


def ensure_running(interval_s: float = INTERVAL_S) -> None:
    """Start the exporting thread of this process, unless it runs already. Cheap: call it freely."""
    global _thread
    if _thread is not None and _thread.is_alive():
        return
    with _lock:
        if _thread is not None and _thread.is_alive():
            return
        _stop.clear()
        _thread = threading.Thread(target=_loop, args=(interval_s,), name="warehouse-export", daemon=True)
        _thread.start()


def stop(timeout_s: float = 10.0) -> None:
    """Stop the thread after the export in progress, if any (tests; a clean shutdown)."""
    global _thread
    with _lock:
        thread, _thread = _thread, None
    _stop.set()
    if thread is not None:
        thread.join(timeout_s)


def _loop(interval_s: float) -> None:
    while not _stop.is_set():
        try:
            stats = warehouse.refresh()
            if stats.rows:
                log.info("Exported %s ledger rows to the warehouse in %.1f s", stats.rows, stats.seconds)
        except Exception:  # the next tick tries again; the dashboards read the tail meanwhile
            log.exception("Exporting the ledger to the warehouse failed")
        _stop.wait(interval_s)
