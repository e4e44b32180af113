"""What a workspace may do on its plan, checked in the engine services (the UI only mirrors it).

The effective plan comes from the workspace's billing account, whose state only Stripe's
webhooks (or a fetch of the subscription) set: active or trialing → its plan; past due or
unpaid → its plan for ``billing_grace_days`` from the first past-due notice, then Free; no
subscription, canceled or incomplete → Free. Billing not configured → self-hosted, unlimited.
Nothing is ever deleted when a plan shrinks: what is over the limit stays and keeps working;
only adding more is refused.

    limits.check(workspace_id, "workflows", current_count)      # before saving a new workflow
    limits.check(workspace_id, "schedules", current_count)      # before adding a schedule
    limits.check(workspace_id, "workflow_runs", runs_this_month)  # before the executor starts a run
    limits.require_feature(workspace_id, "reports")

Importing this module installs the plan hook into the generation path (``engine.guards``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine import db, guards
from engine.billing import plans
from engine.billing.models import BillingAccount
from engine.billing.plans import LIMIT_LABELS, Plan
from engine.config import get_settings
from engine.dbtypes import utcnow
from engine.errors import MeterbookError
from engine.models import Invitation, LedgerEntry, Membership
from engine.permissions import Actor

LIVE = frozenset({"active", "trialing"})
GRACE = frozenset({"past_due", "unpaid"})
STATE_TTL = 5.0  # seconds a process reuses a workspace's plan on the generation path


class PlanLimitReached(MeterbookError):
    """The plan does not allow this. Carries the limit, the use and the plan that would allow it."""

    def __init__(self, message: str, *, limit: str, current: int | Decimal, allowed: int | Decimal | None,
                 upgrade_to: str | None):
        super().__init__(message)
        self.limit, self.current, self.allowed, self.upgrade_to = limit, current, allowed, upgrade_to


@dataclass(frozen=True)
class Effective:
    plan: Plan
    subscribed_plan: str  # what the account pays for (free when none)
    status: str
    grace_until: datetime | None  # past due: when the plan drops to Free
    customer_id: str | None

    @property
    def bills_usage(self) -> bool:
        return self.customer_id is not None and self.plan.bills_usage and self.status in LIVE | GRACE


def month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def effective(session: Session, workspace_id: int, now: datetime | None = None) -> Effective:
    if not plans.billing_configured():
        return Effective(plans.SELF_HOSTED, plans.SELF_HOSTED.key, "self_hosted", None, None)
    now = now or utcnow()
    account = session.scalar(select(BillingAccount).where(BillingAccount.workspace_id == workspace_id))
    if account is None:
        return Effective(plans.free(), "free", "none", None, None)
    return _from_account(account, now)


def _from_account(account: BillingAccount, now: datetime) -> Effective:
    subscribed = plans.all_plans().get(account.plan) or plans.free()
    if account.status in LIVE:
        return Effective(subscribed, subscribed.key, account.status, None, account.stripe_customer_id)
    if account.status in GRACE:
        until = (account.past_due_since or now) + timedelta(days=get_settings().billing_grace_days)
        plan = subscribed if now < until else plans.free()
        return Effective(plan, subscribed.key, account.status, until, account.stripe_customer_id)
    return Effective(plans.free(), subscribed.key, account.status, None, account.stripe_customer_id)


def current(workspace_id: int, now: datetime | None = None) -> Effective:
    with db.read_session() as s:
        return effective(s, workspace_id, now)


# --- the cache the generation path reads ------------------------------------------------------

_cache: dict[int, tuple[float, Effective]] = {}
_cache_lock = threading.Lock()


def cached(workspace_id: int, session: Session | None = None) -> Effective:
    hit = _cache.get(workspace_id)
    if hit is not None and time.monotonic() - hit[0] < STATE_TTL:
        return hit[1]
    if session is not None:
        state = effective(session, workspace_id)
    else:
        state = current(workspace_id)
    with _cache_lock:
        _cache[workspace_id] = (time.monotonic(), state)
    return state


def forget(workspace_id: int | None = None) -> None:
    """Drop what this process remembers (a webhook changed the plan)."""
    with _cache_lock:
        if workspace_id is None:
            _cache.clear()
        else:
            _cache.pop(workspace_id, None)


# --- checks ----------------------------------------------------------------------------------


def _upgrade_for(limit: str, needed: int | Decimal | None, plan: Plan) -> Plan | None:
    for candidate in plans.all_plans().values():
        if candidate.order <= plan.order:
            continue
        allowed = candidate.limit(limit)
        if allowed is None or needed is None or allowed >= needed:
            return candidate
    return None


def _refuse(state: Effective, limit: str, current: int | Decimal, allowed: int | Decimal, needed) -> PlanLimitReached:
    label = LIMIT_LABELS[limit]
    shown = f"${current:,.2f} of ${allowed:,.2f}" if limit == "ai_spend" else f"{current:,} of {allowed:,}"
    upgrade = _upgrade_for(limit, needed, state.plan)
    why = ""
    if state.status in GRACE and state.plan.key != state.subscribed_plan:
        why = " (the subscription is past due, so Free limits apply until the payment succeeds)"
    path = (f"Upgrade to {upgrade.name} on the Billing page to raise it." if upgrade
            else "This is the largest plan; contact support to raise it.")
    return PlanLimitReached(f"The {state.plan.name} plan's limit on {label} is reached: {shown}{why}. {path}",
                            limit=limit, current=current, allowed=allowed,
                            upgrade_to=upgrade.key if upgrade else None)


def check(workspace_id: int, limit: str, current_count: int, *, adding: int = 1) -> None:
    """Refuse adding ``adding`` more of ``limit`` when ``current_count`` already uses the plan's allowance."""
    if limit not in LIMIT_LABELS or limit == "ai_spend":
        raise ValueError(f"unknown countable limit {limit!r}")
    if current_count < 0 or adding < 1:
        raise ValueError("counts are whole numbers and at least one thing is added")
    if not plans.billing_configured():
        return
    state = current(workspace_id)
    allowed = state.plan.limit(limit)
    if allowed is not None and current_count + adding > allowed:
        raise _refuse(state, limit, current_count, allowed, current_count + adding)


def require_feature(workspace_id: int, feature: str) -> None:
    if feature not in plans.FEATURES:
        raise ValueError(f"unknown feature {feature!r}")
    state = current(workspace_id)
    if state.plan.has(feature):
        return
    upgrade = next((p for p in plans.all_plans().values() if p.order > state.plan.order and p.has(feature)), None)
    label = plans.FEATURE_LABELS[feature]
    path = f"Upgrade to {upgrade.name} on the Billing page to use them." if upgrade else "No plan includes them."
    raise PlanLimitReached(f"The {state.plan.name} plan does not include {label}. {path}", limit=feature,
                           current=0, allowed=0, upgrade_to=upgrade.key if upgrade else None)


def spend_this_month(session: Session, workspace_id: int, now: datetime | None = None) -> Decimal:
    total = session.scalar(select(func.sum(LedgerEntry.cost)).where(
        LedgerEntry.workspace_id == workspace_id, LedgerEntry.created_at >= month_start(now or utcnow())))
    return total if total is not None else Decimal(0)


def members_in_use(session: Session, workspace_id: int, now: datetime | None = None) -> int:
    members = session.scalar(select(func.count()).select_from(Membership).where(
        Membership.workspace_id == workspace_id))
    invited = session.scalar(select(func.count()).select_from(Invitation).where(
        Invitation.workspace_id == workspace_id, Invitation.accepted_at.is_(None),
        Invitation.revoked_at.is_(None), Invitation.expires_at > (now or utcnow())))
    return int(members) + int(invited)


def check_members(session: Session, workspace_id: int) -> None:
    """Inside the invitation's transaction: members plus open invitations within the plan."""
    if not plans.billing_configured():
        return
    state = effective(session, workspace_id)
    allowed = state.plan.limit("members")
    used = members_in_use(session, workspace_id)
    if allowed is not None and used + 1 > allowed:
        raise _refuse(state, "members", used, allowed, used + 1)


# --- usage against each limit, for the Billing page --------------------------------------------

# Counters for limits whose things live in other rooms (workflows, schedules, runs): each room
# registers ``fn(session, workspace_id, month_start) -> int`` so the page can show its bar.
COUNTERS: dict[str, Callable[[Session, int, datetime], int]] = {}


def register_counter(limit: str, fn: Callable[[Session, int, datetime], int]) -> None:
    COUNTERS[limit] = fn


@dataclass(frozen=True)
class LimitUse:
    limit: str
    label: str
    used: int | Decimal
    allowed: int | Decimal | None


def usage(session: Session, workspace_id: int, plan: Plan, now: datetime | None = None) -> list[LimitUse]:
    """Use this period of every limit that can be counted today (the others have no counter yet)."""
    now = now or utcnow()
    rows = [LimitUse("ai_spend", LIMIT_LABELS["ai_spend"], spend_this_month(session, workspace_id, now),
                     plan.limit("ai_spend")),
            LimitUse("members", LIMIT_LABELS["members"], members_in_use(session, workspace_id, now),
                     plan.limit("members"))]
    for limit, count in COUNTERS.items():
        rows.append(LimitUse(limit, LIMIT_LABELS[limit], count(session, workspace_id, month_start(now)),
                             plan.limit(limit)))
    return rows


# --- the generation path's hook ----------------------------------------------------------------


class PlanHook:
    """``guards.plan``: refuses AI calls past a blocked allowance; queues billable usage for the meter."""

    def check(self, actor: Actor, kind: str) -> None:
        if not plans.billing_configured():
            return
        state = cached(actor.workspace_id)
        allowed = state.plan.limit("ai_spend")
        if state.plan.overage != "blocked" or allowed is None:
            return
        with db.read_session() as s:
            spent = spend_this_month(s, actor.workspace_id)
        if spent >= allowed:
            raise _refuse(state, "ai_spend", spent, allowed, None)

    def record(self, session: Session, workspace_id: int, ledger_id: int, cost: Decimal | None,
               created_at: datetime) -> None:
        """In the ledger row's transaction: its meter outbox row, when the workspace bills usage."""
        if cost is None or cost <= 0 or not plans.billing_configured():
            return
        state = cached(workspace_id, session)
        if state.bills_usage:
            from engine.billing import meters

            meters.enqueue(session, workspace_id=workspace_id, ledger_id=ledger_id, cost=cost,
                           customer_id=state.customer_id, created_at=created_at)


HOOK = PlanHook()
guards.install(plan_hook=HOOK)
