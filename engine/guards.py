"""The checks the generation path makes around every call, filled in by the services that own them.

* ``plan``: billing's plan limits, asked before anything is estimated or reserved; and, in the
  ledger row's transaction, ``record`` (billing queues billable usage for Stripe's meter there,
  so the row and its meter event commit together or not at all).
* ``budgets``: reservations. Before each attempt its worst-case cost is reserved against every
  budget that covers the call (the hook raises a ``MeterbookError`` to refuse); afterwards
  the hold is settled to the real cost in the same transaction that writes the ledger row,
  so it is settled exactly once, or released when the attempt cost nothing.

Until those services install themselves, nothing is limited and nothing is held.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy.orm import Session

from engine.permissions import Actor


@dataclass(frozen=True)
class CallContext:
    """What a budget needs to know to decide whether it covers one attempt."""

    workspace_id: int
    user_id: int | None
    api_key_id: int | None
    project_id: int | None
    kind: str
    tags: tuple[str, ...]
    provider: str
    model: str
    connection_id: int
    request_id: str
    attempt: int


class BudgetHook(Protocol):
    def reserve(self, ctx: CallContext, amount: Decimal | None) -> Any: ...

    def settle(self, session: Session, hold: Any, actual: Decimal | None) -> None: ...

    def release(self, hold: Any) -> None: ...


class PlanHook(Protocol):
    def check(self, actor: Actor, kind: str) -> None: ...

    def record(self, session: Session, workspace_id: int, ledger_id: int, cost: Decimal | None,
               created_at: datetime) -> None: ...


class _Unlimited:
    def reserve(self, ctx: CallContext, amount: Decimal | None) -> None:
        return None

    def settle(self, session: Session, hold: Any, actual: Decimal | None) -> None:
        pass

    def release(self, hold: Any) -> None:
        pass

    def check(self, actor: Actor, kind: str) -> None:
        pass

    def record(self, session: Session, workspace_id: int, ledger_id: int, cost: Decimal | None,
               created_at: datetime) -> None:
        pass


budgets: BudgetHook = _Unlimited()
plan: PlanHook = _Unlimited()


def install(*, budgets_hook: BudgetHook | None = None, plan_hook: PlanHook | None = None) -> None:
    global budgets, plan
    if budgets_hook is not None:
        budgets = budgets_hook
    if plan_hook is not None:
        plan = plan_hook
