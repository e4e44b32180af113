"""Reservations: the budget hook around every attempt, and the promise that a hard limit holds.

For each attempt the generation path calls:

* ``reserve(ctx, amount)`` — one write transaction: lock every budget covering the call (in id
  order, so two callers never deadlock), bring each one's period counter up to date, and
  check ``spent + held + amount <= limit`` for every hard budget; then write one hold per
  budget. A hard budget that would pass its limit refuses the call (``BudgetExceeded``, naming
  the budget, what is spent, held and left); a downgrade budget asks for its cheaper model
  (``Downgrade``); a warn budget only lets its alerts speak.
* ``settle(session, hold, actual)`` — inside the transaction that writes the ledger row: each
  hold goes ``held → settled`` at most once (a second settle changes nothing), and the real
  cost moves into the period's ``spent`` where the ledger row's ``created_at`` falls.
* ``release(hold)`` — the attempt never reached the vendor: ``held → released``.

"Held" is never a counter that could drift: it is the sum of live holds, read under the same
lock. A hold whose process died stops counting after ``HOLD_TTL``, so a crash can delay calls
but never refuse for long a call that fits. A call that outlives ``HOLD_TTL`` is still settled,
at its real cost, after its hold stopped counting.

Locking: on PostgreSQL ``SELECT … FOR UPDATE`` on the budget rows, then the holds are read; on
SQLite the reservation begins with BEGIN IMMEDIATE, which takes the database's write lock
before anything is read, so two callers can never both pass the check on the same snapshot;
the reservations a process's threads ask for at once are made in one such transaction
(``_Combined``). That makes a call no budget covers a short write too, in a database where every
call writes its ledger row anyway. A settle runs in the ledger transaction, which holds that
lock from its first write on.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from engine import alerts, db, monitor
from engine.alerts import usd
from engine.budget_periods import period_at
from engine.budget_scope import COVERING, covering_params, spent_between
from engine.dbtypes import to_money, utcnow
from engine.errors import MeterbookError
from engine.guards import CallContext
from engine.models import Budget, BudgetHold, LedgerEntry, Workspace

HOLD_TTL = timedelta(minutes=15)


class BudgetExceeded(MeterbookError):
    """A hard budget refused the call."""

    def __init__(self, message: str, budget_id: int):
        super().__init__(message)
        self.budget_id = budget_id


class Downgrade(MeterbookError):
    """A downgrade budget is at its limit: run the attempt on ``target`` ("connection/model") instead."""

    def __init__(self, message: str, budget_id: int, target: str):
        super().__init__(message)
        self.budget_id = budget_id
        self.target = target


@dataclass(frozen=True)
class Hold:
    """What ``reserve`` hands the generation path for one attempt."""

    workspace_id: int
    request_id: str
    attempt: int
    amount: Decimal
    hold_ids: tuple[int, ...]
    budget_ids: tuple[int, ...]


# --- the counters ---------------------------------------------------------------------------

BUDGETS = Budget.__table__
HOLDS = BudgetHold.__table__
# What the hook reads of a budget: everything the check, the counter and a threshold alert need.
COLUMNS = [BUDGETS.c[name] for name in ("id", "workspace_id", "name", "scope", "scope_id", "scope_value", "period",
                                       "limit_usd", "action", "downgrade_to", "thresholds", "period_start", "spent")]


def roll(session, budget, tz: str, at: datetime) -> str:
    """Make the budget's counter (``period_start``, ``spent``) describe the period containing ``at``.

    Returns "current" (it already did), "rolled" (a new period: ``spent`` re-read from the
    ledger, which also heals a counter that was off) or "past" (``at`` lies in a period that
    is already closed: the counter is left alone). The caller stores the change.
    """
    period = period_at(budget.period, tz, at)
    if budget.period_start == period.start:
        return "current"
    if budget.period_start is not None and budget.period_start > period.start:
        return "past"
    dialect = session.get_bind().dialect.name if isinstance(session, Session) else session.dialect.name
    budget.spent = session.scalar(spent_between(budget, period.start, period.end, dialect))
    budget.period_start = period.start
    return "rolled"


# The hook's statements are built once, their values bound per call, so each compiles once.
HELD = (select(HOLDS.c.budget_id, func.sum(HOLDS.c.amount))
        .where(HOLDS.c.budget_id.in_(bindparam("budget_ids", expanding=True)), HOLDS.c.state == "held",
               HOLDS.c.expires_at > bindparam("now"))
        .group_by(HOLDS.c.budget_id))
_LOCK = select(*COLUMNS, Workspace.timezone.label("tz")).join(Workspace, Workspace.id == BUDGETS.c.workspace_id)
LOCK_COVERING = _LOCK.where(COVERING).order_by(BUDGETS.c.id).with_for_update(of=BUDGETS)
# SQLite only, where the write lock is held before this reads: the budgets and their live holds in one
# statement. PostgreSQL reads the holds after the row locks are granted (``HELD``), because a statement
# that waited for a row lock still sees the other tables as they were when it started.
COVERING_WITH_HELD = _LOCK.add_columns(
    select(func.coalesce(func.sum(HOLDS.c.amount), 0))
    .where(HOLDS.c.budget_id == BUDGETS.c.id, HOLDS.c.state == "held", HOLDS.c.expires_at > bindparam("now"))
    .scalar_subquery().label("held")
).where(COVERING).order_by(BUDGETS.c.id)
LOCK_BY_ID = (_LOCK.where(BUDGETS.c.id.in_(bindparam("budget_ids", expanding=True)))
              .order_by(BUDGETS.c.id).with_for_update(of=BUDGETS))
STORE = (update(BUDGETS).where(BUDGETS.c.id == bindparam("budget_id"))
         .values(period_start=bindparam("new_period_start"), spent=bindparam("new_spent")))
ADD_HOLDS = insert(HOLDS).returning(HOLDS.c.id, sort_by_parameter_order=True)
SETTLE = (update(HOLDS).where(HOLDS.c.id.in_(bindparam("hold_ids", expanding=True)), HOLDS.c.state == "held")
          .values(state="settled", actual=bindparam("cost"), finished_at=bindparam("at"))
          .returning(HOLDS.c.budget_id))
RELEASE = (update(HOLDS).where(HOLDS.c.id.in_(bindparam("hold_ids", expanding=True)), HOLDS.c.state == "held")
           .values(state="released", finished_at=bindparam("at")))
WRITTEN_AT = select(LedgerEntry.created_at).where(LedgerEntry.request_id == bindparam("request_id"),
                                                 LedgerEntry.attempt == bindparam("attempt"))


def held(conn, budget_ids: list[int], now: datetime) -> dict[int, Decimal]:
    """What live holds keep from each budget: held, and not expired."""
    if not budget_ids:
        return {}
    return {budget_id: amount for budget_id, amount in conn.execute(HELD, {"budget_ids": budget_ids, "now": now})}


def _locked(conn, statement, params: dict) -> list[SimpleNamespace]:
    """Budgets locked in id order (PostgreSQL's row locks; SQLite holds its write lock already)."""
    return [SimpleNamespace(**row._mapping) for row in conn.execute(statement, params)]


def _store(conn, budget: SimpleNamespace) -> None:
    conn.execute(STORE, {"budget_id": budget.id, "new_period_start": budget.period_start, "new_spent": budget.spent})


# --- the hook -------------------------------------------------------------------------------


class Reservations:
    """The ``guards.BudgetHook`` that budgets install. ``clock`` is replaceable for tests of time."""

    def __init__(self, clock: Callable[[], datetime] = utcnow, ttl: timedelta = HOLD_TTL):
        self.clock = clock
        self.ttl = ttl

    def reserve(self, ctx: CallContext, amount: Decimal | None) -> Hold | None:
        if db.is_sqlite():
            return _SQLITE_WRITES.run(lambda conn: self._reserve_in(conn, ctx, amount))
        with db.write_transaction() as conn:
            return self._reserve_in(conn, ctx, amount)

    def _reserve_in(self, conn, ctx: CallContext, amount: Decimal | None) -> Hold | None:
        """One reservation inside a write transaction that holds the lock (see the module's docstring)."""
        params = covering_params(ctx)
        now = self.clock()
        if conn.dialect.name == "sqlite":
            budgets = _locked(conn, COVERING_WITH_HELD, params | {"now": now})
        else:
            budgets = _locked(conn, LOCK_COVERING, params)
            holding = held(conn, [b.id for b in budgets], now)
            for b in budgets:
                b.held = holding.get(b.id, Decimal(0))
        if not budgets:
            return None  # nothing covers the call: nothing to hold
        for b in budgets:
            if roll(conn, b, b.tz, now) == "rolled":
                _store(conn, b)
        self._check(ctx, amount, [(b, b.held) for b in budgets])
        reserved = to_money(amount or 0)
        ids = conn.scalars(ADD_HOLDS, [
            dict(budget_id=b.id, request_id=ctx.request_id, attempt=ctx.attempt, amount=reserved,
                 state="held", created_at=now, expires_at=now + self.ttl) for b in budgets]).all()
        return Hold(ctx.workspace_id, ctx.request_id, ctx.attempt, reserved, tuple(ids), tuple(b.id for b in budgets))

    @staticmethod
    def _check(ctx: CallContext, amount: Decimal | None, budgets: list[tuple[SimpleNamespace, Decimal]]) -> None:
        refused: list[tuple[SimpleNamespace, Decimal]] = []
        for b, h in budgets:
            over = b.spent + h + amount > b.limit_usd if amount is not None else b.spent + h >= b.limit_usd
            if b.action == "downgrade" and over and b.downgrade_to and b.downgrade_to.partition("/")[2] != ctx.model:
                raise Downgrade(f"The budget “{b.name}” is at its limit, so calls switch to {b.downgrade_to}.",
                                b.id, b.downgrade_to)
            if b.action == "block" and (amount is None or over):
                refused.append((b, h))
        if not refused:
            return
        b, h = refused[0]
        if amount is None:
            raise BudgetExceeded(
                f"{ctx.provider}/{ctx.model} has no known price, so this call cannot be checked against the "
                f"hard budget “{b.name}”. Add a price override for it under Settings → Prices.", b.id)
        remaining = max(b.limit_usd - b.spent - h, Decimal(0))
        others = f" ({len(refused) - 1} other hard budget{'s' if len(refused) > 2 else ''} would too.)" \
            if len(refused) > 1 else ""
        raise BudgetExceeded(
            f"This call could cost up to {usd(amount)}, more than the budget “{b.name}” has left: "
            f"{usd(b.spent)} spent and {usd(h)} held for calls in progress of its {usd(b.limit_usd)} limit, "
            f"so {usd(remaining)} remains. Wait for calls in progress to finish, ask for fewer output tokens, "
            f"or ask an admin to raise the budget.{others}", b.id)

    def settle(self, session: Session, hold: Hold | None, actual: Decimal | None) -> None:
        if hold is None:
            return
        conn = session.connection()
        now = self.clock()
        cost = to_money(actual or 0)
        # The holds first: on SQLite this write takes the database's write lock before anything is read,
        # and a hold settled (or released) before answers nothing here, so it counts once.
        settled = set(conn.scalars(SETTLE, {"hold_ids": list(hold.hold_ids), "cost": cost, "at": now}).all())
        if not settled:
            return
        written = self._written_at(session, conn, hold)
        at = written or now
        budgets = _locked(conn, LOCK_BY_ID, {"budget_ids": sorted(settled)})
        fired = False
        for b in budgets:
            if b.id not in settled:
                continue  # settled (or released) before: it counts once
            before = b.spent
            state = roll(conn, b, b.tz, at)
            if state == "past":
                continue  # the ledger row belongs to a closed period; the ledger has it
            if state == "current" or written is None:
                b.spent = b.spent + cost  # a rolled counter re-read the ledger, this row included
            if state == "rolled":
                before = Decimal(0)
            _store(conn, b)
            fired |= alerts.fire_thresholds(session, b, before, b.spent)
        monitor.after_commit(session, hold.workspace_id, hold.budget_ids, fired)

    @staticmethod
    def _written_at(session: Session, conn, hold: Hold) -> datetime | None:
        """When the ledger row this settle belongs to was written (flushed earlier in this transaction)."""
        for obj in session.identity_map.values():  # the generation path still holds it, and wrote it: no query
            if isinstance(obj, LedgerEntry) and obj.request_id == hold.request_id and obj.attempt == hold.attempt:
                return obj.created_at
        return conn.scalar(WRITTEN_AT, {"request_id": hold.request_id, "attempt": hold.attempt})

    def release(self, hold: Hold | None) -> None:
        if hold is None:
            return
        with db.get_engine().begin() as conn:
            conn.execute(RELEASE, {"hold_ids": list(hold.hold_ids), "at": self.clock()})


class _Combined:
    """SQLite: the reservations that a process's threads ask for at once, made in one write transaction.

    SQLite has one writer at a time, and under the GIL a thread that holds its lock waits for the
    interpreter behind every other thread at each statement; fifty callers each taking the lock
    for one reservation spent most of it waiting. So a caller queues its reservation and, if no
    one is making reservations, makes every queued one itself, one after another in one
    transaction: each sees the holds written before it, exactly as if they had run one by one.
    A refusal (``BudgetExceeded``, ``Downgrade``) is its caller's alone and writes nothing; any
    other error fails the transaction, and every caller in it gets that error.
    """

    BATCH = 64

    def __init__(self) -> None:
        self._lock = threading.Lock()  # held by the caller making the queued reservations
        self._queue: deque[_Slot] = deque()

    def run(self, job: Callable):
        slot = _Slot(job)
        self._queue.append(slot)
        while not slot.done.is_set() or self._queue:
            if self._lock.acquire(blocking=False):
                try:
                    self._drain()
                finally:
                    self._lock.release()
                # Looping while the queue is not empty: one queued after our last look, whose caller
                # is asleep below, is not left waiting for its timeout.
            elif slot.done.is_set():
                break  # another caller is making them
            else:
                slot.done.wait(0.05)
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _drain(self) -> None:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(self.BATCH, len(self._queue)))]
            try:
                with db.write_transaction() as conn:
                    for slot in batch:
                        try:
                            slot.result = slot.job(conn)
                        except (BudgetExceeded, Downgrade) as refused:
                            slot.error = refused
            except BaseException as exc:  # the transaction failed: nothing of it was written
                for slot in batch:
                    slot.result, slot.error = None, exc
            for slot in batch:
                slot.done.set()


class _Slot:
    __slots__ = ("job", "done", "result", "error")

    def __init__(self, job: Callable) -> None:
        self.job, self.done, self.result, self.error = job, threading.Event(), None, None


_SQLITE_WRITES = _Combined()
HOOK = Reservations()
