"""Projects: what AI spend is charged to. Each belongs to a workspace and optionally to a client."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from engine import audit, db
from engine.accounts import check_name
from engine.dbtypes import utcnow
from engine.errors import Conflict, InvalidInput, NotFound
from engine.models import Client, LedgerEntry, Project
from engine.permissions import Actor, authorize


@dataclass(frozen=True)
class ProjectView:
    id: int
    name: str
    description: str | None
    client_id: int | None
    client_name: str | None
    budget_usd: Decimal | None
    spent_usd: Decimal
    created_at: datetime
    archived_at: datetime | None

    @property
    def budget_used(self) -> float | None:
        """Share of the budget spent, for a progress bar (display only)."""
        if not self.budget_usd:
            return None
        return float(self.spent_usd / self.budget_usd)


def parse_budget(value) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        budget = Decimal(str(value).strip().lstrip("$").replace(",", ""))
    except InvalidOperation:
        raise InvalidInput("Budget must be an amount in dollars, like 2500 or 99.50.") from None
    if not budget.is_finite() or budget <= 0:
        raise InvalidInput("Budget must be more than zero, or left empty for none.")
    if budget >= Decimal("1e8"):  # SQLite keeps Money as an integer of 1e-10 USD: under ~9.2e8 fits
        raise InvalidInput("Budget must be under one hundred million dollars.")
    budget = budget.quantize(Decimal("0.01"))
    if budget == 0:
        raise InvalidInput("Budget must be at least one cent, or left empty for none.")
    return budget


def _check_client(session, actor: Actor, client_id: int | None) -> None:
    if client_id is None:
        return
    client = session.get(Client, client_id)
    if client is None or client.workspace_id != actor.workspace_id:
        raise InvalidInput("Choose a client from this workspace.")


def _unique(session, workspace_id: int, name: str, except_id: int | None = None) -> None:
    q = select(Project.id).where(Project.workspace_id == workspace_id, func.lower(Project.name) == name.lower())
    if except_id is not None:
        q = q.where(Project.id != except_id)
    if session.scalar(q) is not None:
        raise Conflict(f"A project named “{name}” already exists.")


def create_project(
    actor: Actor, name: str, *, client_id: int | None = None, description: str | None = None, budget_usd=None
) -> ProjectView:
    name = check_name(name, "Project name")
    budget = parse_budget(budget_usd)
    with db.transaction() as s:
        authorize(s, actor, "project.write")
        _check_client(s, actor, client_id)
        _unique(s, actor.workspace_id, name)
        project = Project(
            workspace_id=actor.workspace_id, name=name, client_id=client_id,
            description=description or None, budget_usd=budget,
        )
        s.add(project)
        try:
            s.flush()
        except IntegrityError:
            raise Conflict(f"A project named “{name}” already exists.") from None
        audit.record_for(s, actor, "project.created", "project", project.id, name=name)
        pid = project.id
    return get_project(actor, pid)


def _get(session, actor: Actor, project_id: int) -> Project:
    project = session.get(Project, project_id)
    if project is None or project.workspace_id != actor.workspace_id:
        raise NotFound("That project does not exist.")
    return project


def update_project(
    actor: Actor, project_id: int, *, name: str, client_id: int | None, description: str | None, budget_usd
) -> None:
    name = check_name(name, "Project name")
    budget = parse_budget(budget_usd)
    with db.transaction() as s:
        authorize(s, actor, "project.write")
        project = _get(s, actor, project_id)
        _check_client(s, actor, client_id)
        _unique(s, actor.workspace_id, name, except_id=project.id)
        project.name, project.client_id = name, client_id
        project.description, project.budget_usd = description or None, budget
        audit.record_for(s, actor, "project.updated", "project", project.id, name=name)


def set_archived(actor: Actor, project_id: int, archived: bool) -> None:
    with db.transaction() as s:
        authorize(s, actor, "project.write")
        project = _get(s, actor, project_id)
        project.archived_at = utcnow() if archived else None
        audit.record_for(s, actor, "project.archived" if archived else "project.restored", "project", project.id)


def delete_project(actor: Actor, project_id: int) -> None:
    """Delete a project that was never charged. One with usage is refused: archive it instead."""
    with db.transaction() as s:
        authorize(s, actor, "project.write")
        project = _get(s, actor, project_id)
        used = s.scalar(select(LedgerEntry.id).where(LedgerEntry.project_id == project.id).limit(1))
        if used is not None:
            raise Conflict(
                f"“{project.name}” has recorded usage, which must stay in the ledger. Archive the project instead."
            )
        audit.record_for(s, actor, "project.deleted", "project", project.id, name=project.name)
        s.delete(project)


def _spent_subquery():
    return (
        select(LedgerEntry.project_id, func.sum(LedgerEntry.cost).label("spent"))
        .where(LedgerEntry.project_id.is_not(None))
        .group_by(LedgerEntry.project_id)
        .subquery()
    )


def _views(session, where, *, limit: int | None = None, offset: int = 0) -> list[ProjectView]:
    spent = _spent_subquery()
    q = (
        select(Project, Client.name, spent.c.spent)
        .outerjoin(Client, Client.id == Project.client_id)
        .outerjoin(spent, spent.c.project_id == Project.id)
        .where(*where)
        .order_by(func.lower(Project.name))
        .offset(offset)
    )
    if limit is not None:
        q = q.limit(limit)
    return [
        ProjectView(p.id, p.name, p.description, p.client_id, cname, p.budget_usd,
                    spent_value if spent_value is not None else Decimal(0), p.created_at, p.archived_at)
        for p, cname, spent_value in session.execute(q).all()
    ]


def list_projects(
    actor: Actor,
    *,
    search: str = "",
    client_id: int | None = None,
    include_archived: bool = False,
    page: int = 1,
    page_size: int = 25,
) -> tuple[list[ProjectView], int]:
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        where = [Project.workspace_id == actor.workspace_id]
        if search.strip():
            where.append(func.lower(Project.name).contains(search.strip().lower(), autoescape=True))
        if client_id is not None:
            where.append(Project.client_id == client_id)
        if not include_archived:
            where.append(Project.archived_at.is_(None))
        total = s.scalar(select(func.count()).select_from(Project).where(*where)) or 0
        return _views(s, where, limit=page_size, offset=(max(page, 1) - 1) * page_size), total


def get_project(actor: Actor, project_id: int) -> ProjectView:
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        views = _views(s, [Project.workspace_id == actor.workspace_id, Project.id == project_id])
    if not views:
        raise NotFound("That project does not exist.")
    return views[0]


def project_choices(actor: Actor) -> dict[int, str]:
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        rows = s.execute(
            select(Project.id, Project.name)
            .where(Project.workspace_id == actor.workspace_id, Project.archived_at.is_(None))
            .order_by(func.lower(Project.name))
        ).all()
    return {i: n for i, n in rows}
