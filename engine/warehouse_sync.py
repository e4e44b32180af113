"""Keeps the analytics warehouse exported while Meterbook runs.

Dashboards read the exported Parquet plus the rows not yet exported, which ``warehouse.connect``
reads from the system of record on every page run: without exports that tail grows until it is
the whole ledger. The sidecar's leader calls ``export_now`` every 30 s (``engine/sidecar/jobs.py``),
and ``python -m engine export`` does it by hand. ``refresh`` takes an inter-process lock on the
warehouse, so two exporters at once export each row once; a failed export is tried again at the
next tick, and the tail keeps the dashboards right meanwhile.
"""

from __future__ import annotations

from analytics import warehouse


def export_now() -> warehouse.ExportStats:
    """Export what is new, now."""
    return warehouse.refresh()
