"""Alerts: a budget threshold or forecast crossed, or a spend spike; shown in the app, emailed, posted.

Every alert has a ``key`` unique within its workspace (``threshold:{budget}:{period}:{pct}``,
``forecast:{budget}:{period}``, ``spike:{series}:{day}``) and is inserted with ON CONFLICT DO
NOTHING, so a retry, a restart or a second process can never fire it twice. An alert row is
written in the transaction that caused it (a threshold with the ledger row that crossed it);
it is sent only after that commits (``engine.monitor``), by ``deliver_pending``, which claims
what is pending, sends and records how each delivery went.

The storm guard: everything pending for a workspace goes out together, as one message per
recipient (and per webhook): a digest when there are several alerts, never one email each.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from engine import db, notify, vault
from engine.config import get_settings
from engine.dbtypes import utcnow
from engine.errors import InvalidInput, NotFound
from engine.models import Budget, BudgetAlert, Membership, User, Workspace
from engine.permissions import Actor, authorize

log = logging.getLogger(__name__)

KINDS = {"threshold": "Budget threshold", "forecast": "Forecast", "spike": "Spend spike"}
DIGEST_MAX_ITEMS = 20  # a digest lists this many alerts and counts the rest
SENDING_TIMEOUT = timedelta(minutes=10)
SNOOZE_CHOICES = {"1 hour": timedelta(hours=1), "1 day": timedelta(days=1), "1 week": timedelta(weeks=1)}


def usd(value: Decimal) -> str:
    """Dollars for people: cents, or four places for amounts under a cent (a single call often is)."""
    return f"${value:,.2f}" if abs(value) >= Decimal("0.01") or not value else f"${value:,.4f}"


# --- firing ---------------------------------------------------------------------------------


def fire(session: Session, *, workspace_id: int, key: str, kind: str, title: str, message: str,
         budget_id: int | None = None, detail: dict[str, Any] | None = None) -> bool:
    """Record an alert unless one with the same key exists; True if this call created it."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    created = session.scalar(
        insert(BudgetAlert)
        .values(workspace_id=workspace_id, budget_id=budget_id, key=key, kind=kind, title=title[:300],
                message=message, detail=detail or {}, created_at=utcnow(), delivery="pending")
        .on_conflict_do_nothing(index_elements=["workspace_id", "key"])
        .returning(BudgetAlert.id)  # a row only when this insert made one (rowcount is -1 on psycopg)
    )
    return created is not None


def period_key(start: datetime) -> str:
    return start.strftime("%Y%m%dT%H%M")


def fire_thresholds(session: Session, budget: Budget, before: Decimal, after: Decimal) -> bool:
    """Fire each threshold of the budget that spending from ``before`` to ``after`` reached."""
    fired = False
    for pct in sorted(budget.thresholds or ()):
        level = budget.limit_usd * pct / 100
        if before < level <= after:
            fired |= fire(
                session, workspace_id=budget.workspace_id, budget_id=budget.id, kind="threshold",
                key=f"threshold:{budget.id}:{period_key(budget.period_start)}:{pct}",
                title=f"{budget.name}: {pct}% of the budget used",
                message=(f"The budget “{budget.name}” has used {pct}% of its {usd(budget.limit_usd)} "
                         f"{budget.period if budget.period != 'total' else 'all-time'} limit: "
                         f"{usd(after)} spent."),
                detail={"threshold": pct, "spent": str(after), "limit": str(budget.limit_usd),
                        "period_start": budget.period_start.isoformat()},
            )
    return fired


# --- in the app -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertView:
    id: int
    kind: str
    budget_id: int | None
    title: str
    message: str
    detail: dict[str, Any]
    created_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    snoozed_until: datetime | None
    delivery: str
    delivery_error: str | None

    def status(self, now: datetime) -> str:
        if self.acknowledged_at:
            return "Acknowledged"
        if self.snoozed_until and self.snoozed_until > now:
            return "Snoozed"
        return "New"


def _open(now: datetime):
    """Alerts that still ask for attention: not acknowledged, and not snoozed right now."""
    return BudgetAlert.acknowledged_at.is_(None) & or_(BudgetAlert.snoozed_until.is_(None),
                                                       BudgetAlert.snoozed_until <= now)


def _view(a: BudgetAlert, by: str | None) -> AlertView:
    return AlertView(a.id, a.kind, a.budget_id, a.title, a.message, a.detail or {}, a.created_at, a.acknowledged_at,
                     by, a.snoozed_until, a.delivery, a.delivery_error)


def list_alerts(actor: Actor, *, only_open: bool = False, budget_id: int | None = None,
                limit: int = 200, now: datetime | None = None) -> list[AlertView]:
    now = now or utcnow()
    with db.read_session() as s:
        authorize(s, actor, "budget.read")
        q = (select(BudgetAlert, User.email).outerjoin(User, User.id == BudgetAlert.acknowledged_by)
             .where(BudgetAlert.workspace_id == actor.workspace_id)
             .order_by(BudgetAlert.created_at.desc(), BudgetAlert.id.desc()).limit(limit))
        if only_open:
            q = q.where(_open(now))
        if budget_id is not None:
            q = q.where(BudgetAlert.budget_id == budget_id)
        return [_view(a, email) for a, email in s.execute(q).all()]


def open_count(actor: Actor, now: datetime | None = None) -> int:
    """How many alerts want attention: the sidebar badge."""
    with db.read_session() as s:
        authorize(s, actor, "budget.read")
        return s.scalar(select(func.count()).select_from(BudgetAlert)
                        .where(BudgetAlert.workspace_id == actor.workspace_id, _open(now or utcnow()))) or 0


def _alert(s: Session, actor: Actor, alert_id: int) -> BudgetAlert:
    a = s.get(BudgetAlert, alert_id)
    if a is None or a.workspace_id != actor.workspace_id:
        raise NotFound("That alert does not exist in this workspace.")
    return a


def acknowledge(actor: Actor, alert_id: int) -> None:
    with db.transaction() as s:
        authorize(s, actor, "alert.manage")
        a = _alert(s, actor, alert_id)
        if a.acknowledged_at is None:
            a.acknowledged_at, a.acknowledged_by, a.snoozed_until = utcnow(), actor.user_id, None


def snooze(actor: Actor, alert_id: int, duration: timedelta, now: datetime | None = None) -> datetime:
    """Hide an alert from the badge until ``now + duration``; it comes back if still unacknowledged."""
    if not timedelta(minutes=1) <= duration <= timedelta(days=30):
        raise InvalidInput("Snooze for between a minute and 30 days.")
    with db.transaction() as s:
        authorize(s, actor, "alert.manage")
        a = _alert(s, actor, alert_id)
        if a.acknowledged_at is not None:
            raise InvalidInput("That alert is already acknowledged; there is nothing to snooze.")
        a.snoozed_until = (now or utcnow()) + duration
        return a.snoozed_until


# --- delivery -------------------------------------------------------------------------------


def webhook_binding(budget: Budget) -> vault.SecretBinding:
    """The associated data a budget's webhook address is encrypted under: it opens for that budget only."""
    return vault.SecretBinding(budget.workspace_id, 0, f"budget/{budget.id}/webhook", "webhook")


@dataclass
class _Outbox:
    emails: dict[str, list[int]]  # address → alert ids
    webhooks: dict[str, list[int]]  # address → alert ids
    skipped: dict[int, str]  # alert id → why it could not go out anywhere


def _recipients(s: Session, workspace_id: int, claimed: list[BudgetAlert]) -> _Outbox:
    out = _Outbox(defaultdict(list), defaultdict(list), {})
    members = dict(s.execute(select(Membership.user_id, User.email).join(User, User.id == Membership.user_id)
                             .where(Membership.workspace_id == workspace_id)).all())
    admins = [members[uid] for uid in s.scalars(select(Membership.user_id).where(
        Membership.workspace_id == workspace_id, Membership.role.in_(("owner", "admin"))))]
    budgets = {b.id: b for b in s.scalars(select(Budget).where(
        Budget.id.in_({a.budget_id for a in claimed if a.budget_id is not None})))}
    email_on = notify.email_configured()
    for a in claimed:
        b = budgets.get(a.budget_id) if a.budget_id is not None else None
        # Budget alerts go to the budget's owners; spikes, which no budget owns, to the workspace's admins.
        people = [members[u] for u in (b.owner_ids or []) if u in members] if b is not None else admins
        if email_on:
            for address in people:
                out.emails[address].append(a.id)
        if b is not None and b.webhook_ciphertext is not None:
            try:
                url = vault.decrypt_secret(s, webhook_binding(b), b.webhook_ciphertext, b.webhook_nonce)
            except vault.VaultError:
                out.skipped[a.id] = (f"The webhook of “{b.name}” cannot be decrypted; enter its address again "
                                     "on the Budgets page.")
            else:
                out.webhooks[url].append(a.id)
    return out


def _compose(alerts: list[BudgetAlert], workspace: str, base_url: str) -> tuple[str, str]:
    """Subject and text of one message carrying ``alerts``: the alert itself, or a digest of many."""
    link = f"{base_url.rstrip('/')}/budgets"
    if len(alerts) == 1:
        a = alerts[0]
        return f"[Meterbook] {a.title}", f"{a.message}\n\nWorkspace: {workspace}\nSee it in Meterbook: {link}"
    lines = [f"• {a.title} — {a.message}" for a in alerts[:DIGEST_MAX_ITEMS]]
    if len(alerts) > DIGEST_MAX_ITEMS:
        lines.append(f"…and {len(alerts) - DIGEST_MAX_ITEMS} more.")
    return (f"[Meterbook] {len(alerts)} alerts in {workspace}",
            f"{len(alerts)} alerts fired together in {workspace}:\n\n" + "\n".join(lines) + f"\n\nSee them: {link}")


def deliver_pending(workspace_id: int) -> int:
    """Send every pending alert of a workspace (grouped per recipient) and record the outcome; returns how many."""
    now = utcnow()
    with db.transaction() as s:
        # A claim older than SENDING_TIMEOUT belonged to a process that died while sending.
        ids = s.scalars(
            update(BudgetAlert)
            .where(BudgetAlert.workspace_id == workspace_id,
                   (BudgetAlert.delivery == "pending")
                   | ((BudgetAlert.delivery == "sending") & (BudgetAlert.delivery_at < now - SENDING_TIMEOUT)))
            .values(delivery="sending", delivery_at=now)
            .returning(BudgetAlert.id)
            .execution_options(synchronize_session=False)
        ).all()
        if not ids:
            return 0
        claimed = list(s.scalars(select(BudgetAlert).where(BudgetAlert.id.in_(ids)).order_by(BudgetAlert.id)))
        workspace = s.get(Workspace, workspace_id).name
        out = _recipients(s, workspace_id, claimed)
    by_id = {a.id: a for a in claimed}
    errors: dict[int, list[str]] = defaultdict(list)
    sent: set[int] = set()
    base_url = get_settings().base_url
    for address, alert_ids in out.emails.items():
        subject, text = _compose([by_id[i] for i in alert_ids], workspace, base_url)
        _send(lambda: notify.send_email([address], subject, text), alert_ids, sent, errors)
    for url, alert_ids in out.webhooks.items():
        _, text = _compose([by_id[i] for i in alert_ids], workspace, base_url)
        extra = {"alerts": [{"kind": by_id[i].kind, "title": by_id[i].title, "detail": by_id[i].detail}
                            for i in alert_ids]}
        _send(lambda: notify.post_webhook(url, text, extra=extra), alert_ids, sent, errors)
    done = utcnow()
    with db.transaction() as s:
        for i in ids:
            problems = errors.get(i, []) + ([out.skipped[i]] if i in out.skipped else [])
            state = ("partial" if i in sent else "failed") if problems else "sent" if i in sent else "in_app"
            s.execute(update(BudgetAlert).where(BudgetAlert.id == i).values(
                delivery=state, delivery_error="\n".join(problems) or None, delivery_at=done))
    return len(ids)


def _send(send, alert_ids: list[int], sent: set[int], errors: dict[int, list[str]]) -> None:
    try:
        send()
    except notify.DeliveryFailed as exc:
        log.warning("alert delivery failed: %s", exc)
        for i in alert_ids:
            errors[i].append(str(exc))
    else:
        sent.update(alert_ids)
