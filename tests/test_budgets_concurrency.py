"""The reservation promise under load: a hard limit is never passed, and no call that fits is refused.

Callers reserve, write their ledger row and settle exactly as the generation path does, as
threads of one process and as separate processes (spawned, each with its own engine on the
same SQLite file or PostgreSQL schema). Each settles at exactly what it reserved, so a
refusal is provably wrong when its amount fits in what was left once everything settled:
at the moment of refusing, spent plus held was no more than the final spend.

A property test then runs random sequences of reserve / settle / settle again / release /
crash / waiting against a model of what the budget should allow.
"""

from __future__ import annotations

import multiprocessing
import random
import sys
import threading
import time
import types
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from engine import budgets, db, monitor, reservations, usage
from engine.budget_scope import has_tag
from engine.guards import CallContext
from engine.models import Budget, BudgetHold, LedgerEntry
from tests.factories import owner

LIMIT = Decimal("1.00")


@pytest.fixture(autouse=True)
def no_monitor(monkeypatch):
    """Forecasts and alert delivery are other tests' business; here they would only add load."""
    monkeypatch.setattr(monitor, "schedule", lambda *args: None)
AMOUNTS = [Decimal(c) / 200 for c in range(1, 10)]  # $0.005 to $0.045: some forty calls fill the limit


def call(workspace_id: int, user_id: int, tag: str) -> CallContext:
    return CallContext(workspace_id, user_id, None, None, "text", (tag,), "openai", "gpt-4o-mini", 1,
                       uuid.uuid4().hex, 1)


def run_callers(workspace_id: int, user_id: int, tag: str, threads: int,
                seed: int) -> tuple[list[str], list[str], list[str]]:
    """``threads`` callers until each is refused three times running; returns settled and refused amounts, and errors."""
    settled: list[str] = []
    refused: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()

    def caller(n: int) -> None:
        try:
            calls(n)
        except Exception as exc:  # a thread's exception would otherwise vanish with the thread
            with lock:
                errors.append(repr(exc))

    def calls(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        misses = 0
        while misses < 3:
            amount = rng.choice(AMOUNTS)
            ctx = call(workspace_id, user_id, tag)
            try:
                hold = reservations.HOOK.reserve(ctx, amount)
            except budgets.BudgetExceeded:
                misses += 1
                with lock:
                    refused.append(str(amount))
                continue
            misses = 0
            with db.transaction() as s:  # the ledger row and the settle in one transaction, as the path does
                usage.record(s, workspace_id=workspace_id, user_id=user_id, tags=[tag], provider="openai",
                             model="gpt-4o-mini", cost=amount, request_id=ctx.request_id, attempt=1)
                reservations.HOOK.settle(s, hold, amount)
            with lock:
                settled.append(str(amount))

    workers = [threading.Thread(target=caller, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return settled, refused, errors


def process_callers(url: str, workspace_id: int, user_id: int, tag: str, threads: int, seed: int,
                    start, results) -> None:
    """One spawned process: its own engine on the shared database; starts with the others, at ``start``."""
    monitor.schedule = lambda *args: None  # as in this test's own process
    db.use_engine(db.make_engine(url))
    try:
        with db.read_session() as s:
            s.get(Budget, 1)  # connect and load everything before the race starts
        start.wait(timeout=60)
        results.put(run_callers(workspace_id, user_id, tag, threads, seed))
    finally:
        db.use_engine(None)


def tag_budget(actor, tag: str) -> int:
    return budgets.create_budget(actor, name=f"Tag {tag}", scope="tag", target=tag, period="monthly",
                                 limit_usd=LIMIT).id


def assert_promise_kept(budget_id: int, tag: str, settled: list[str], refused: list[str]) -> None:
    with db.read_session() as s:
        counter = s.get(Budget, budget_id).spent
        dialect = s.get_bind().dialect.name
        in_ledger = s.scalar(select(func.sum(LedgerEntry.cost)).where(has_tag(tag, dialect)))
        still_held = s.scalar(select(func.count()).select_from(BudgetHold).where(BudgetHold.state == "held"))
    total = sum((Decimal(a) for a in settled), Decimal(0))
    assert counter == in_ledger == total  # every settle counted once
    assert total <= LIMIT, f"overshoot by {total - LIMIT}"
    fitting = [a for a in refused if Decimal(a) <= LIMIT - total]
    assert fitting == [], f"refused calls that fit in the ${LIMIT - total} left"
    assert still_held == 0
    assert LIMIT - total < max(AMOUNTS)  # the callers really did fill the budget


def test_threads_never_overshoot_and_never_refuse_a_call_that_fits(database):
    actor = owner()
    tag = "threads"
    budget_id = tag_budget(actor, tag)
    settled, refused, errors = run_callers(actor.workspace_id, actor.user_id, tag, threads=12, seed=1)
    assert errors == [] and refused  # the limit was reached, under contention, with every call answered
    assert_promise_kept(budget_id, tag, settled, refused)


def test_processes_never_overshoot_and_never_refuse_a_call_that_fits(database, monkeypatch):
    # Spawned children re-run the parent's __main__ by path; after an AppTest in this worker that can be
    # streamlit_app.py. A bare __main__ gives them nothing to re-run: the target is imported by name.
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    actor = owner()
    tag = "processes"
    budget_id = tag_budget(actor, tag)
    url = database.url.render_as_string(hide_password=False)
    spawn = multiprocessing.get_context("spawn")
    start, queue = spawn.Barrier(3), spawn.Queue()
    processes = [spawn.Process(target=process_callers,
                               args=(url, actor.workspace_id, actor.user_id, tag, 4, seed, start, queue))
                 for seed in range(3)]
    for p in processes:
        p.start()
    results = [queue.get(timeout=120) for _ in processes]
    for p in processes:
        p.join(timeout=30)
    settled = [a for s, _, _ in results for a in s]
    refused = [a for _, r, _ in results for a in r]
    assert [e for _, _, errors in results for e in errors] == []
    assert_promise_kept(budget_id, tag, settled, refused)


# --- random call sequences against a model --------------------------------------------------

T0 = datetime(2026, 3, 10, 12, tzinfo=UTC)
OPS = st.lists(st.one_of(
    st.tuples(st.just("reserve"), st.integers(1, 60)),  # cents
    st.tuples(st.just("settle"), st.integers(0, 30), st.integers(0, 100)),  # which hold, % of it really spent
    st.tuples(st.just("settle_again"), st.integers(0, 30)),
    st.tuples(st.just("release"), st.integers(0, 30)),
    st.tuples(st.just("crash"), st.integers(0, 30)),
    st.tuples(st.just("wait"), st.integers(1, 20)),  # minutes
), max_size=30)


@pytest.fixture
def one_workspace(sqlite_database):
    return owner()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_random_sequences_keep_the_promise(one_workspace, ops):
    """A caller that outlives the hold's lifetime is treated as dead: its settle never comes."""
    actor = one_workspace
    hook = reservations.HOOK
    clock = [T0]
    original = hook.clock
    hook.clock = lambda: clock[0]
    try:
        tag = uuid.uuid4().hex
        budget_id = budgets.create_budget(actor, name=tag, scope="tag", target=tag, period="total",
                                          limit_usd=LIMIT).id
        holds: list[dict] = []
        spent = Decimal(0)

        def live() -> Decimal:
            return sum((h["amount"] for h in holds if h["state"] in ("held", "crashed")
                        and clock[0] < h["at"] + reservations.HOLD_TTL), Decimal(0))

        def pick(i: int, *states: str) -> dict | None:
            alive = [h for h in holds if h["state"] in states
                     and (h["state"] == "settled" or clock[0] < h["at"] + reservations.HOLD_TTL)]
            return alive[i % len(alive)] if alive else None

        for op in ops:
            if op[0] == "reserve":
                amount = Decimal(op[1]) / 100
                fits = spent + live() + amount <= LIMIT
                try:
                    hold = hook.reserve(call(actor.workspace_id, actor.user_id, tag), amount)
                except budgets.BudgetExceeded:
                    assert not fits, "a call that fits was refused"
                else:
                    assert fits, "a call that does not fit was let through"
                    holds.append({"hold": hold, "amount": amount, "at": clock[0], "state": "held"})
            elif op[0] == "settle" and (h := pick(op[1], "held")):
                actual = (h["amount"] * op[2] / 100).quantize(Decimal("0.0001"))
                with db.transaction() as s:
                    hook.settle(s, h["hold"], actual)
                h.update(state="settled", actual=actual)
                spent += actual
            elif op[0] == "settle_again" and (h := pick(op[1], "settled")):
                with db.transaction() as s:
                    hook.settle(s, h["hold"], h["actual"])
                hook.release(h["hold"])
            elif op[0] == "release" and (h := pick(op[1], "held")):
                hook.release(h["hold"])
                h["state"] = "released"
            elif op[0] == "crash" and (h := pick(op[1], "held")):
                h["state"] = "crashed"
            elif op[0] == "wait":
                clock[0] += timedelta(minutes=op[1])
            with db.read_session() as s:
                counted = s.get(Budget, budget_id).spent
                holding = reservations.held(s, [budget_id], clock[0]).get(budget_id, Decimal(0))
            assert counted == spent <= LIMIT
            assert holding == live()
    finally:
        hook.clock = original


def _queue_three(combined, jobs):
    """Three callers whose reservations queue while another caller is making some, then run as one batch."""
    results = {}
    combined._lock.acquire()  # a reservation in progress: the next callers queue behind it

    def call(name, job):
        try:
            results[name] = combined.run(job)
        except Exception as exc:  # noqa: BLE001 - the test reads what each caller got
            results[name] = exc

    threads = [threading.Thread(target=call, args=(name, job)) for name, job in jobs.items()]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(combined._queue) < len(jobs) and time.monotonic() < deadline:
        time.sleep(0.005)
    combined._lock.release()
    for t in threads:
        t.join(10)
    return results


def test_reservations_queued_together_run_in_one_transaction_and_refusals_stay_their_own(sqlite_database):
    from sqlalchemy import text

    from engine.reservations import BudgetExceeded, _Combined

    with sqlite_database.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS combined_probe (x INTEGER)"))
        conn.execute(text("DELETE FROM combined_probe"))

    def insert(x):
        def job(conn):
            conn.execute(text("INSERT INTO combined_probe VALUES (:x)"), {"x": x})
            return x
        return job

    def refuse(_conn):
        raise BudgetExceeded("over", 1)

    def broken(conn):
        conn.execute(text("INSERT INTO combined_probe VALUES (99)"))
        raise RuntimeError("disk I/O error")

    try:
        got = _queue_three(_Combined(), {"a": insert(1), "b": refuse, "c": insert(3)})
        assert got["a"] == 1 and got["c"] == 3 and isinstance(got["b"], BudgetExceeded)
        got = _queue_three(_Combined(), {"a": insert(4), "b": broken, "c": insert(6)})
        assert all(isinstance(v, RuntimeError) for v in got.values()), got  # one transaction: one fate
        with sqlite_database.connect() as conn:
            assert sorted(x for (x,) in conn.execute(text("SELECT x FROM combined_probe"))) == [1, 3]
    finally:
        with sqlite_database.begin() as conn:
            conn.execute(text("DROP TABLE combined_probe"))
