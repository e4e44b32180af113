"""Workflow executor: 40 python nodes end to end, per-node overhead of a transform chain, and queued-run throughput.

* ``python40_s``: one run of 40 sequential tiny **python** nodes, from trigger to finish (null
  when the python sandbox is not available on this host or in this build);
* ``transform_node_overhead_p50_ms``: a 40-node transform chain's whole run (trigger, claim,
  every node, every step written, the run's end) divided by 40; the p50 over ``--chains`` runs;
* ``runs_per_s``: ``--runs`` queued runs of a 5-node transform chain worked by two worker
  threads, divided by the wall time until the last one finished.

All on a fresh SQLite file (``bench.scratch_database``), data directory in a temporary folder.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time


def add_arguments(parser) -> None:
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=5)


def _chain(name: str, n: int, node: str) -> str:
    lines = [f"name: {name}", "nodes:"]
    for i in range(n):
        needs = f", needs: [n{i - 1}]" if i else ""
        lines.append(f"  - {{id: n{i}, type: {node}{needs}, params: " + (
            "{code: 'def main(data): return (data or 0) + 1', data: " + (f"\"{{{{ n{i - 1} }}}}\"" if i else "0") + "}}"
            if node == "python" else "{value: \"{{ " + (f"n{i - 1} + 1" if i else "1") + " }}\"}}"))
    return "\n".join(lines) + "\n"


def _python40(actor) -> float | None:
    from engine.workflows import runs, store, worker

    try:
        import engine.workflows.python_sandbox  # noqa: F401
    except ImportError:
        return None
    wf = store.create(actor, _chain("python40", 40, "python"))
    started = time.perf_counter()
    run = runs.trigger(actor, wf.id)
    worker.work_once("bench-python")
    elapsed = time.perf_counter() - started
    return round(elapsed, 3) if runs.get_run(actor, run.id).status == "succeeded" else None


def _overhead(actor, chains: int) -> float:
    from engine.workflows import runs, store, worker

    wf = store.create(actor, _chain("transform40", 40, "transform"))
    per_node = []
    for _ in range(chains):
        started = time.perf_counter()
        run = runs.trigger(actor, wf.id)
        worker.work_once("bench-transform")
        per_node.append((time.perf_counter() - started) * 1000 / 40)
        assert len(runs.steps(actor, run.id)) == 40
    return round(statistics.median(per_node), 3)


def _throughput(actor, n: int) -> float:
    from engine.workflows import runs, store, worker

    wf = store.create(actor, _chain("five", 5, "transform"))
    for _ in range(n):
        runs.trigger(actor, wf.id)
    started = time.perf_counter()
    workers = [threading.Thread(target=worker.work_once, args=(f"bench-{i}",)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    done = sum(1 for r in runs.list_runs(actor, limit=n + 10) if r.status == "succeeded")
    return round(done / elapsed, 1)


def run(args) -> dict:
    os.environ.setdefault("METERBOOK_ARGON2_PROFILE", "test")
    from engine import accounts, bench, db, migrate
    from engine.config import get_settings
    from engine.permissions import Actor

    with tempfile.TemporaryDirectory(prefix="meterbook-bench-wf-") as data, bench.scratch_database(None) as engine:
        os.environ["METERBOOK_DATA_DIR"] = data
        get_settings.cache_clear()
        migrate.upgrade(engine)
        db.use_engine(engine)
        try:
            user, ws = accounts.create_first_owner("runner@example.com", "Bench", "quiet lantern copper meadow", "Bench")
            actor = Actor(user.id, ws.id)
            python40 = _python40(actor)
            overhead = _overhead(actor, args.chains)
            per_s = _throughput(actor, args.runs)
        finally:
            db.use_engine(None)
            get_settings.cache_clear()
    return {"bench": "workflows", "python40_s": python40, "transform_node_overhead_p50_ms": overhead,
            "runs_per_s": per_s, "runs": args.runs, "workers": 2, "database": "sqlite"}
