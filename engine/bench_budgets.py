"""Budget reservations under contention: 50 callers against one $1.00 hard budget (``--callers``, ``--limit``).

Each caller (a thread) does what the generation path does around a vendor call: reserve the
worst case, then settle it in a transaction of its own, until it has been refused three
times in a row. Every call settles at exactly what it reserved, so a refusal is provably
wrong ("refused_fitting") when its amount fits in what is left once everything has settled.
Calls cost $0.0001–$0.0003, so the budget takes some five thousand of them.

``reservations_per_s_*`` counts granted reservations per second of wall time, each settled:
the budget's own work per call. ``--ledger`` also writes each call's ledger row in the
settling transaction, as the generation path does, to time whole calls instead. SQLite runs
on a fresh temporary file; PostgreSQL on a fresh schema of ``METERBOOK_TEST_POSTGRES_URL``
when it is set (else null): there a reservation commits durably while it holds the budget's
row lock, so one budget's rate is bounded by the server's commit (WAL flush) time.
``settled_usd`` is the SQLite run's; ``overshoot_usd`` and ``refused_fitting`` are the worst
over every run.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from decimal import Decimal

STEPS = [Decimal(n) / 10_000 for n in (1, 2, 3)]


def add_arguments(parser) -> None:
    parser.add_argument("--callers", type=int, default=50)
    parser.add_argument("--limit", default="1.00", help="the hard budget in USD")
    parser.add_argument("--ledger", action="store_true", help="write each call's ledger row too (whole calls)")


def _race(actor, limit: Decimal, callers: int, ledger: bool) -> dict:
    from engine import budgets, db, reservations, usage
    from engine.guards import CallContext

    budget = budgets.create_budget(actor, name="Bench", scope="workspace", period="monthly", limit_usd=limit)
    granted, refused, errors = [], [], []
    lock = threading.Lock()
    start = threading.Barrier(callers + 1)

    def caller(n: int) -> None:
        rng = random.Random(n)
        start.wait()
        misses = 0
        try:
            while misses < 3:
                amount = rng.choice(STEPS)
                ctx = CallContext(actor.workspace_id, actor.user_id, None, None, "text", (), "openai",
                                  "gpt-4o-mini", 1, uuid.uuid4().hex, 1)
                try:
                    hold = reservations.HOOK.reserve(ctx, amount)
                except budgets.BudgetExceeded:
                    misses += 1
                    with lock:
                        refused.append(amount)
                    continue
                misses = 0
                with db.transaction() as s:
                    if ledger:
                        usage.record(s, workspace_id=actor.workspace_id, user_id=actor.user_id, provider="openai",
                                     model="gpt-4o-mini", cost=amount, request_id=ctx.request_id, attempt=1)
                    reservations.HOOK.settle(s, hold, amount)
                with lock:
                    granted.append(amount)
        except Exception as exc:  # reported, never hidden: a failed caller makes the run worthless
            with lock:
                errors.append(repr(exc))

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(callers)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"{len(errors)} callers failed, first: {errors[0]}")
    settled = budgets.get_budget(actor, budget.id).spent
    assert settled == sum(granted, Decimal(0)), "the budget's counter disagrees with the calls it settled"
    return {
        "settled": settled,
        "overshoot": max(settled - limit, Decimal(0)),
        "refused_fitting": sum(1 for a in refused if a <= limit - settled),
        "per_s": round(len(granted) / elapsed),
    }


def _run_on(url: str | None, limit: Decimal, callers: int, ledger: bool) -> dict:
    from engine import accounts, db, migrate, monitor
    from engine.bench import scratch_database
    from engine.permissions import Actor

    with scratch_database(url) as engine:
        migrate.upgrade(engine)
        db.use_engine(engine)
        schedule, monitor.schedule = monitor.schedule, (lambda *args: None)  # alerts are not what is timed
        try:
            user, ws = accounts.create_first_owner("bench@meterbook.local", "Bench", "correct horse battery staple",
                                                   "Bench")
            return _race(Actor(user.id, ws.id), limit, callers, ledger)
        finally:
            monitor.schedule = schedule
            db.use_engine(None)


def run(args) -> dict:
    from engine.budgets import parse_limit

    limit = parse_limit(args.limit)
    runs = {"sqlite": _run_on(None, limit, args.callers, args.ledger)}
    postgres = os.environ.get("METERBOOK_TEST_POSTGRES_URL")
    if postgres:
        runs["postgres"] = _run_on(postgres, limit, args.callers, args.ledger)
    return {
        "bench": "budgets",
        "callers": args.callers,
        "limit_usd": float(limit),
        "settled_usd": float(runs["sqlite"]["settled"]),
        "overshoot_usd": float(max(r["overshoot"] for r in runs.values())),
        "refused_fitting": sum(r["refused_fitting"] for r in runs.values()),
        "reservations_per_s_sqlite": runs["sqlite"]["per_s"],
        "reservations_per_s_postgres": runs["postgres"]["per_s"] if "postgres" in runs else None,
    }
