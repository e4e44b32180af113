"""Run by tests/test_billing_meters.py in a subprocess that it kills with SIGKILL at random moments.

Writes up to ``per_run`` ledger rows (never more than ``total`` in all) through the generation path's
plan hook, the row and its outbox row in one transaction, draining the outbox now and then and
fully at the end, unless it is killed first.
"""

from __future__ import annotations

import random
import sys
from decimal import Decimal

from sqlalchemy import func, select

from engine import db, guards, usage
from engine.billing import meters
from engine.billing import limits as _limits  # noqa: F401  (installs the plan hook)
from engine.models import LedgerEntry


def main(workspace_id: int, total: int, per_run: int, seed: int) -> int:
    rng = random.Random(seed)
    for _ in range(per_run):
        with db.transaction() as s:
            done = s.scalar(select(func.count()).select_from(LedgerEntry).where(LedgerEntry.workspace_id == workspace_id))
            if done >= total:
                break
            cost = Decimal(rng.randint(1, 5_000_000)) / Decimal(10**9)  # up to $0.005, finer than the meter unit
            entry = usage.record(s, workspace_id=workspace_id, provider="openai", model="gpt-4o-mini", cost=cost,
                                 status="ok")
            guards.plan.record(s, workspace_id, entry.id, cost, entry.created_at)
        if rng.random() < 0.4:
            meters.drain(max_rows=rng.randint(1, 5))
    meters.drain()
    return 0


if __name__ == "__main__":
    print("ready", flush=True)  # imports done: the test's kill timer starts from here, however slow the machine
    sys.exit(main(*(int(arg) for arg in sys.argv[1:5])))
