"""Which budgets cover a call, and which ledger rows count against a budget: the same rule both ways.

A budget's scope is one of ``SCOPES``: the whole workspace, one client (through its
projects), project, provider (the catalog provider a call is priced under, as in the ledger),
model, user, workspace API key, or tag. A call is covered by every enabled budget whose scope
matches it.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import ColumnElement, Select, and_, bindparam, cast, column, exists, false, func, or_, select, true
from sqlalchemy.dialects.postgresql import JSONB

from engine.budget_periods import period_at
from engine.guards import CallContext
from engine.models import Budget, LedgerEntry, Project

SCOPES = ("workspace", "client", "project", "provider", "model", "user", "api_key", "tag")
SCOPE_LABELS = {"workspace": "Whole workspace", "client": "Client", "project": "Project", "provider": "Provider",
                "model": "Model", "user": "Person", "api_key": "API key", "tag": "Tag"}
BY_ID = frozenset({"client", "project", "user", "api_key"})  # the others name their target in scope_value


# One statement shape for every call, its values bound at run time, so SQLAlchemy compiles it once.
# A value a call does not have (no project, no API key) is bound as NULL and matches nothing.
COVERING: ColumnElement[bool] = and_(
    Budget.workspace_id == bindparam("workspace_id"),
    Budget.enabled.is_(True),
    or_(
        Budget.scope == "workspace",
        and_(Budget.scope == "provider", Budget.scope_value == bindparam("provider")),
        and_(Budget.scope == "model", Budget.scope_value == bindparam("model")),
        and_(Budget.scope == "project", Budget.scope_id == bindparam("project_id")),
        and_(Budget.scope == "client", Budget.scope_id == select(Project.client_id)
             .where(Project.id == bindparam("project_id")).scalar_subquery()),
        and_(Budget.scope == "user", Budget.scope_id == bindparam("user_id")),
        and_(Budget.scope == "api_key", Budget.scope_id == bindparam("api_key_id")),
        and_(Budget.scope == "tag", Budget.scope_value.in_(bindparam("tags", expanding=True))),
    ),
)


def covering_params(ctx: CallContext) -> dict:
    """The values ``COVERING`` is run with for one call: the budgets whose scope matches it."""
    return {"workspace_id": ctx.workspace_id, "provider": ctx.provider, "model": ctx.model,
            "project_id": ctx.project_id, "user_id": ctx.user_id, "api_key_id": ctx.api_key_id,
            "tags": list(ctx.tags)}


def has_tag(tag: str, dialect: str) -> ColumnElement[bool]:
    """The ledger row carries ``tag`` (tags are a JSON list)."""
    if dialect == "postgresql":
        return cast(LedgerEntry.tags, JSONB).contains([tag])
    each = func.json_each(LedgerEntry.tags).table_valued("value")
    return exists(select(1).select_from(each).where(column("value") == tag))


def ledger_rows(scope: str, scope_id: int | None, scope_value: str | None, dialect: str) -> ColumnElement[bool]:
    """The ledger rows a budget with this scope counts (the workspace condition is the caller's)."""
    if scope == "workspace":
        return true()
    if scope == "client":
        return LedgerEntry.project_id.in_(select(Project.id).where(Project.client_id == scope_id))
    if scope == "tag":
        return has_tag(scope_value or "", dialect)
    column_of = {"project": LedgerEntry.project_id, "user": LedgerEntry.user_id, "api_key": LedgerEntry.api_key_id,
                 "provider": LedgerEntry.provider, "model": LedgerEntry.model}
    if scope not in column_of:
        return false()
    return column_of[scope] == (scope_id if scope in BY_ID else scope_value)


def spent_between(budget, start: datetime, end: datetime | None, dialect: str) -> Select:
    """A query for the settled spend of a budget's scope in ``[start, end)``, straight from the ledger."""
    q = select(func.coalesce(func.sum(LedgerEntry.cost), 0)).where(
        LedgerEntry.workspace_id == budget.workspace_id,
        LedgerEntry.created_at >= start,
        ledger_rows(budget.scope, budget.scope_id, budget.scope_value, dialect),
    )
    if end is not None:
        q = q.where(LedgerEntry.created_at < end)
    return q


def current_spent(session, budget: Budget, tz: str, now: datetime) -> Decimal:
    """The budget's spend this period, changing nothing: its counter, or the ledger if the counter is stale."""
    period = period_at(budget.period, tz, now)
    if budget.period_start == period.start:
        return budget.spent
    return session.scalar(spent_between(budget, period.start, period.end, session.get_bind().dialect.name))
