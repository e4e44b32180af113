"""Budgets: spending limits per scope and period, what they have spent, held and left, and where they are heading.

A budget covers the calls of one scope (``engine.budget_scope``) over a calendar period in the
workspace's time zone, or all time (``engine.budget_periods``). At its limit it blocks (a hard
limit, kept by reservations: ``engine.reservations``), warns, or switches calls to a named
cheaper model. Thresholds (50/80/100 % by default) fire alerts once per period
(``engine.alerts``); forecasts (``engine.forecast``) and spike scans (``engine.anomalies``)
run after spend is recorded (``engine.monitor``).

Importing this module installs the reservation hook into the generation path.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine import alerts, audit, db, forecast, guards, monitor, notify, vault
from engine.accounts import check_name
from engine.budget_periods import PERIODS, period_at
from engine.budget_scope import BY_ID, SCOPE_LABELS, SCOPES, current_spent
from engine.dbtypes import to_money, utcnow
from engine.errors import Conflict, InvalidInput, NotFound
from engine.models import (
    ApiKey,
    Budget,
    Client,
    LedgerEntry,
    Membership,
    Project,
    ProviderConnection,
    RouteTarget,
    User,
    Workspace,
)
from engine.permissions import Actor, authorize
from engine.reservations import HOOK, BudgetExceeded, Downgrade, held, roll  # noqa: F401 (the errors callers catch)

ACTIONS = ("block", "warn", "downgrade")
ACTION_LABELS = {"block": "Block calls (hard limit)", "warn": "Warn only", "downgrade": "Switch to a cheaper model"}
DEFAULT_THRESHOLDS = (50, 80, 100)
MAX_LIMIT = Decimal("1e8")  # SQLite keeps Money as an integer of 1e-10 USD


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


KEEP: Final = _Keep()  # ``update_budget(webhook_url=KEEP)``: leave the stored webhook as it is


@dataclass(frozen=True)
class BudgetView:
    id: int
    name: str
    scope: str
    scope_id: int | None
    scope_value: str | None
    target: str  # what the scope names, for people: "Project “Support bot”"
    period: str
    limit_usd: Decimal
    action: str
    downgrade_to: str | None
    thresholds: tuple[int, ...]
    owner_ids: tuple[int, ...]
    webhook_hint: str | None
    enabled: bool
    created_at: datetime
    period_start: datetime
    period_end: datetime | None
    spent: Decimal
    held: Decimal

    @property
    def remaining(self) -> Decimal:
        return max(self.limit_usd - self.spent - self.held, Decimal(0))

    @property
    def used(self) -> float:
        """Spent as a share of the limit, for progress bars (display only)."""
        return float(self.spent / self.limit_usd)


@dataclass(frozen=True)
class Choices:
    """What the budget form can offer for each scope, and the members who can own a budget."""

    clients: dict[int, str]
    projects: dict[int, str]
    users: dict[int, str]
    api_keys: dict[int, str]
    providers: list[str]
    models: list[str]
    tags: list[str]
    downgrade_targets: list[str]


# --- validation -----------------------------------------------------------------------------


def parse_limit(value) -> Decimal:
    try:
        limit = Decimal(str(value).strip().lstrip("$").replace(",", ""))
    except InvalidOperation:
        raise InvalidInput("The limit must be an amount in dollars, like 50 or 12.50.") from None
    if not limit.is_finite() or limit <= 0:
        raise InvalidInput("The limit must be more than zero.")
    if limit >= MAX_LIMIT:
        raise InvalidInput("The limit must be under one hundred million dollars.")
    if to_money(limit) == 0:
        raise InvalidInput("The limit is too small to keep; use at least $0.0001.")
    return to_money(limit)


def parse_thresholds(value: str | Iterable[int]) -> list[int]:
    """"50, 80, 100" or [50, 80, 100]: whole percentages from 1 to 1000, each once."""
    parts = value.replace("%", "").replace(";", ",").split(",") if isinstance(value, str) else list(value)
    try:
        pcts = sorted({int(str(p).strip()) for p in parts if str(p).strip()})
    except ValueError:
        raise InvalidInput("Alert thresholds are whole percentages separated by commas, like 50, 80, 100.") from None
    if any(not 1 <= p <= 1000 for p in pcts):
        raise InvalidInput("Each alert threshold must be between 1% and 1000%.")
    if len(pcts) > 10:
        raise InvalidInput("Use at most 10 alert thresholds.")
    return pcts


def _scope(s: Session, actor: Actor, scope: str, target) -> tuple[int | None, str | None]:
    if scope not in SCOPES:
        raise InvalidInput(f"Choose what the budget covers: one of {', '.join(SCOPES)}.")
    if scope == "workspace":
        return None, None
    label = SCOPE_LABELS[scope].lower()
    if scope in BY_ID:
        try:
            target_id = int(target)
        except (TypeError, ValueError):
            raise InvalidInput(f"Choose the {label} this budget covers.") from None
        model = {"client": Client, "project": Project, "api_key": ApiKey}.get(scope)
        if scope == "user":
            found = s.scalar(select(Membership.id).where(Membership.workspace_id == actor.workspace_id,
                                                         Membership.user_id == target_id))
        else:
            row = s.get(model, target_id)
            found = row is not None and row.workspace_id == actor.workspace_id
        if not found:
            raise InvalidInput(f"Choose a {label} from this workspace.")
        return target_id, None
    value = str(target or "").strip()
    if not value or len(value) > 200:
        raise InvalidInput(f"Name the {label} this budget covers (up to 200 characters).")
    return None, value


def _downgrade(s: Session, actor: Actor, action: str, downgrade_to: str | None) -> str | None:
    if action not in ACTIONS:
        raise InvalidInput("At the limit a budget can block calls, only warn, or switch to a cheaper model.")
    if action != "downgrade":
        return None
    name, sep, model = (downgrade_to or "").strip().partition("/")
    if not sep or not name or not model:
        raise InvalidInput("Choose the cheaper model to switch to, as connection/model (like openai/gpt-4o-mini).")
    conn = s.scalar(select(ProviderConnection).where(ProviderConnection.workspace_id == actor.workspace_id,
                                                    ProviderConnection.name == name))
    if conn is None:
        raise InvalidInput(f"There is no provider connection called {name!r} to switch to. Add it under Providers.")
    return f"{name}/{model}"


def _owners(s: Session, actor: Actor, owner_ids: Iterable[int] | None) -> list[int]:
    ids = list(dict.fromkeys(int(i) for i in owner_ids)) if owner_ids is not None else [actor.user_id]
    members = set(s.scalars(select(Membership.user_id).where(Membership.workspace_id == actor.workspace_id,
                                                             Membership.user_id.in_(ids))))
    if set(ids) - members:
        raise InvalidInput("Budget owners must be members of this workspace.")
    return ids


# --- changing budgets -----------------------------------------------------------------------


def _load(s: Session, actor: Actor, budget_id: int) -> Budget:
    b = s.get(Budget, budget_id)
    if b is None or b.workspace_id != actor.workspace_id:
        raise NotFound("That budget does not exist in this workspace.")
    return b


def _unique(s: Session, actor: Actor, name: str, except_id: int | None = None) -> None:
    q = select(Budget.id).where(Budget.workspace_id == actor.workspace_id, func.lower(Budget.name) == name.lower())
    if except_id is not None:
        q = q.where(Budget.id != except_id)
    if s.scalar(q) is not None:
        raise Conflict(f"A budget named “{name}” already exists.")


def _set_webhook(s: Session, b: Budget, url: str | None) -> None:
    if not url:
        b.webhook_ciphertext = b.webhook_nonce = b.webhook_hint = None
        return
    url = notify.check_webhook_url(url)
    b.webhook_ciphertext, b.webhook_nonce = vault.encrypt_secret(s, alerts.webhook_binding(b), url)
    b.webhook_hint = notify.webhook_hint(url)


def _apply(s: Session, actor: Actor, b: Budget, *, name, scope, target, period, limit_usd, action, downgrade_to,
           thresholds, owner_ids) -> None:
    b.name = check_name(name, "Budget name")
    _unique(s, actor, b.name, b.id)
    b.scope_id, b.scope_value = _scope(s, actor, scope, target)
    b.scope = scope
    if period not in PERIODS:
        raise InvalidInput(f"Choose a period: {', '.join(PERIODS)}.")
    b.period = period
    b.limit_usd = parse_limit(limit_usd)
    b.action = action
    b.downgrade_to = _downgrade(s, actor, action, downgrade_to)
    b.thresholds = parse_thresholds(thresholds)
    b.owner_ids = _owners(s, actor, owner_ids)


def _reconcile(s: Session, b: Budget) -> None:
    """Re-read this period's spend from the ledger and fire the thresholds it has already reached."""
    tz = s.get(Workspace, b.workspace_id).timezone
    b.period_start = None
    roll(s, b, tz, HOOK.clock())
    if alerts.fire_thresholds(s, b, Decimal(0), b.spent):
        monitor.after_commit(s, b.workspace_id, [b.id], True)


def create_budget(actor: Actor, *, name: str, scope: str, target=None, period: str, limit_usd, action: str = "block",
                  downgrade_to: str | None = None, thresholds=DEFAULT_THRESHOLDS,
                  owner_ids: Iterable[int] | None = None, webhook_url: str | None = None) -> BudgetView:
    with db.transaction() as s:
        authorize(s, actor, "budget.write")
        b = Budget(workspace_id=actor.workspace_id, created_by=actor.user_id, spent=Decimal(0))
        _apply(s, actor, b, name=name, scope=scope, target=target, period=period, limit_usd=limit_usd,
               action=action, downgrade_to=downgrade_to, thresholds=thresholds, owner_ids=owner_ids)
        s.add(b)
        s.flush()
        _set_webhook(s, b, webhook_url)
        _reconcile(s, b)
        audit.record_for(s, actor, "budget.create", "budget", b.id, name=b.name, scope=b.scope, period=b.period,
                         limit=str(b.limit_usd), at_limit=b.action)
    return get_budget(actor, b.id)


def update_budget(actor: Actor, budget_id: int, *, name: str, scope: str, target=None, period: str, limit_usd,
                  action: str, downgrade_to: str | None = None, thresholds=DEFAULT_THRESHOLDS,
                  owner_ids: Iterable[int] | None = None, webhook_url: str | None | _Keep = KEEP) -> BudgetView:
    """Change a budget; ``webhook_url`` KEEP leaves the stored address, "" or None removes it."""
    with db.transaction() as s:
        authorize(s, actor, "budget.write")
        b = _load(s, actor, budget_id)
        before = {"name": b.name, "scope": b.scope, "period": b.period, "limit": str(b.limit_usd), "action": b.action}
        _apply(s, actor, b, name=name, scope=scope, target=target, period=period, limit_usd=limit_usd,
               action=action, downgrade_to=downgrade_to, thresholds=thresholds, owner_ids=owner_ids)
        if not isinstance(webhook_url, _Keep):
            _set_webhook(s, b, webhook_url)
        b.updated_at = utcnow()
        _reconcile(s, b)
        audit.record_for(s, actor, "budget.update", "budget", b.id, before=before,
                         after={"name": b.name, "scope": b.scope, "period": b.period, "limit": str(b.limit_usd),
                                "action": b.action})
    return get_budget(actor, budget_id)


def set_enabled(actor: Actor, budget_id: int, enabled: bool) -> None:
    with db.transaction() as s:
        authorize(s, actor, "budget.write")
        b = _load(s, actor, budget_id)
        b.enabled = bool(enabled)
        b.updated_at = utcnow()
        audit.record_for(s, actor, "budget.enable" if enabled else "budget.disable", "budget", b.id, name=b.name)


def delete_budget(actor: Actor, budget_id: int) -> None:
    """Delete a budget and its holds; its alerts stay in the history."""
    with db.transaction() as s:
        authorize(s, actor, "budget.write")
        b = _load(s, actor, budget_id)
        audit.record_for(s, actor, "budget.delete", "budget", b.id, name=b.name, limit=str(b.limit_usd))
        s.delete(b)


# --- reading --------------------------------------------------------------------------------


def _targets(s: Session, budgets: list[Budget]) -> dict[int, str]:
    wanted: dict[str, set[int]] = {}
    for b in budgets:
        if b.scope in BY_ID and b.scope_id is not None:
            wanted.setdefault(b.scope, set()).add(b.scope_id)
    names: dict[tuple[str, int], str] = {}
    for scope, column, model in (("client", Client.name, Client), ("project", Project.name, Project),
                                 ("user", User.email, User), ("api_key", ApiKey.name, ApiKey)):
        if scope in wanted:
            names.update({(scope, i): n for i, n in s.execute(select(model.id, column).where(
                model.id.in_(wanted[scope]))).all()})
    out = {}
    for b in budgets:
        what = SCOPE_LABELS[b.scope]
        if b.scope == "workspace":
            out[b.id] = what
        elif b.scope in BY_ID:
            out[b.id] = f"{what} “{names.get((b.scope, b.scope_id), f'#{b.scope_id} (deleted)')}”"
        else:
            out[b.id] = f"{what} “{b.scope_value}”"
    return out


def _views(s: Session, budgets: list[Budget], tz: str, now: datetime) -> list[BudgetView]:
    holding = held(s, [b.id for b in budgets], now)
    targets = _targets(s, budgets)
    views = []
    for b in budgets:
        period = period_at(b.period, tz, now)
        views.append(BudgetView(
            b.id, b.name, b.scope, b.scope_id, b.scope_value, targets[b.id], b.period, b.limit_usd, b.action,
            b.downgrade_to, tuple(b.thresholds or ()), tuple(b.owner_ids or ()), b.webhook_hint, b.enabled,
            b.created_at, period.start, period.end, current_spent(s, b, tz, now), holding.get(b.id, Decimal(0)),
        ))
    return views


def list_budgets(actor: Actor, now: datetime | None = None) -> list[BudgetView]:
    now = now or HOOK.clock()
    with db.read_session() as s:
        authorize(s, actor, "budget.read")
        tz = s.get(Workspace, actor.workspace_id).timezone
        budgets = list(s.scalars(select(Budget).where(Budget.workspace_id == actor.workspace_id)
                                 .order_by(func.lower(Budget.name))))
        return _views(s, budgets, tz, now)


def get_budget(actor: Actor, budget_id: int, now: datetime | None = None) -> BudgetView:
    now = now or HOOK.clock()
    with db.read_session() as s:
        authorize(s, actor, "budget.read")
        b = _load(s, actor, budget_id)
        return _views(s, [b], s.get(Workspace, b.workspace_id).timezone, now)[0]


@dataclass(frozen=True)
class Burndown:
    budget: BudgetView
    actual: list[tuple[datetime, Decimal]]  # cumulative spend this period (or the last 30 days, all-time)
    forecast: forecast.Forecast | None


def burndown(actor: Actor, budget_id: int, now: datetime | None = None) -> Burndown:
    """What the burn-down chart shows: spend so far this period, and the forecast to its end."""
    now = now or HOOK.clock()
    with db.read_session() as s:
        authorize(s, actor, "budget.read")
        b = _load(s, actor, budget_id)
        tz = s.get(Workspace, b.workspace_id).timezone
        view = _views(s, [b], tz, now)[0]
        hours = forecast.history(s, b, tz, now)
    start = view.period_start if b.period != "total" else forecast.history_start(tz, now)
    start = max(start, forecast.history_start(tz, now))
    actual = forecast.actual_curve(hours, start=start, now=now, spent=view.spent, tz=tz,
                                   hourly_grain=b.period == "daily")
    f = forecast.project(hours, tz=tz, now=now, end=forecast.horizon_end(b, tz, now), spent=view.spent,
                         limit=b.limit_usd)
    return Burndown(view, actual, f)


def choices(actor: Actor) -> Choices:
    with db.read_session() as s:
        authorize(s, actor, "budget.read")
        ws = actor.workspace_id
        clients = dict(s.execute(select(Client.id, Client.name).where(
            Client.workspace_id == ws, Client.archived_at.is_(None)).order_by(Client.name)).all())
        projects = dict(s.execute(select(Project.id, Project.name).where(
            Project.workspace_id == ws, Project.archived_at.is_(None)).order_by(Project.name)).all())
        users = dict(s.execute(select(User.id, User.email).join(Membership, Membership.user_id == User.id)
                               .where(Membership.workspace_id == ws).order_by(User.email)).all())
        keys = dict(s.execute(select(ApiKey.id, ApiKey.name).where(
            ApiKey.workspace_id == ws, ApiKey.revoked_at.is_(None)).order_by(ApiKey.name)).all())
        connections = s.execute(select(ProviderConnection.name, ProviderConnection.price_provider,
                                       ProviderConnection.provider_type)
                                .where(ProviderConnection.workspace_id == ws)).all()
        routed = s.execute(select(ProviderConnection.name, RouteTarget.model)
                           .join(ProviderConnection, ProviderConnection.id == RouteTarget.connection_id)
                           .where(RouteTarget.workspace_id == ws).order_by(RouteTarget.kind, RouteTarget.position)).all()
        used = s.execute(select(LedgerEntry.provider, LedgerEntry.model).where(LedgerEntry.workspace_id == ws)
                         .distinct()).all()
        tags = sorted({t for (ts,) in s.execute(select(LedgerEntry.tags).where(
            LedgerEntry.workspace_id == ws).order_by(LedgerEntry.id.desc()).limit(2000)).all() for t in ts or ()})
    providers = sorted({p or t for _, p, t in connections} | {p for p, _ in used})
    models = sorted({m for _, m in routed} | {m for _, m in used})
    targets = list(dict.fromkeys(f"{c}/{m}" for c, m in routed))
    return Choices(clients, projects, users, keys, providers, models, tags, targets)


guards.install(budgets_hook=HOOK)
