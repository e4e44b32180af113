"""Clients: the organisations a workspace does work for. A client has many projects."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from engine import audit, db
from engine.accounts import check_name, normalize_email
from engine.dbtypes import utcnow
from engine.errors import Conflict, NotFound
from engine.models import Client, Project
from engine.permissions import Actor, authorize


@dataclass(frozen=True)
class ClientView:
    id: int
    name: str
    contact_email: str | None
    notes: str | None
    project_count: int
    created_at: datetime
    archived_at: datetime | None


def _clean(name: str, contact_email: str | None) -> tuple[str, str | None]:
    name = check_name(name, "Client name")
    email = normalize_email(contact_email) if contact_email and contact_email.strip() else None
    return name, email


def create_client(actor: Actor, name: str, contact_email: str | None = None, notes: str | None = None) -> ClientView:
    name, email = _clean(name, contact_email)
    with db.transaction() as s:
        authorize(s, actor, "client.write")
        _unique(s, actor.workspace_id, name)
        client = Client(workspace_id=actor.workspace_id, name=name, contact_email=email, notes=notes or None)
        s.add(client)
        try:
            s.flush()
        except IntegrityError:
            raise Conflict(f"A client named “{name}” already exists.") from None
        audit.record_for(s, actor, "client.created", "client", client.id, name=name)
        return ClientView(client.id, name, email, client.notes, 0, client.created_at, None)


def _unique(session, workspace_id: int, name: str, except_id: int | None = None) -> None:
    q = select(Client.id).where(Client.workspace_id == workspace_id, func.lower(Client.name) == name.lower())
    if except_id is not None:
        q = q.where(Client.id != except_id)
    if session.scalar(q) is not None:
        raise Conflict(f"A client named “{name}” already exists.")


def _get(session, actor: Actor, client_id: int) -> Client:
    client = session.get(Client, client_id)
    if client is None or client.workspace_id != actor.workspace_id:
        raise NotFound("That client does not exist.")
    return client


def update_client(actor: Actor, client_id: int, *, name: str, contact_email: str | None, notes: str | None) -> None:
    name, email = _clean(name, contact_email)
    with db.transaction() as s:
        authorize(s, actor, "client.write")
        client = _get(s, actor, client_id)
        _unique(s, actor.workspace_id, name, except_id=client.id)
        client.name, client.contact_email, client.notes = name, email, notes or None
        audit.record_for(s, actor, "client.updated", "client", client.id, name=name)


def set_archived(actor: Actor, client_id: int, archived: bool) -> None:
    with db.transaction() as s:
        authorize(s, actor, "client.write")
        client = _get(s, actor, client_id)
        client.archived_at = utcnow() if archived else None
        audit.record_for(s, actor, "client.archived" if archived else "client.restored", "client", client.id)


def delete_client(actor: Actor, client_id: int) -> None:
    """Delete a client with no projects. One with projects is refused: its history would go with it."""
    with db.transaction() as s:
        authorize(s, actor, "client.write")
        client = _get(s, actor, client_id)
        count = s.scalar(select(func.count()).select_from(Project).where(Project.client_id == client.id))
        if count:
            raise Conflict(
                f"“{client.name}” still has {count} project(s). Move them to another client or delete them "
                "first — or archive the client to hide it and keep its history."
            )
        audit.record_for(s, actor, "client.deleted", "client", client.id, name=client.name)
        s.delete(client)


def list_clients(
    actor: Actor, *, search: str = "", include_archived: bool = False, page: int = 1, page_size: int = 25
) -> tuple[list[ClientView], int]:
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        where = [Client.workspace_id == actor.workspace_id]
        if search.strip():
            where.append(func.lower(Client.name).contains(search.strip().lower(), autoescape=True))
        if not include_archived:
            where.append(Client.archived_at.is_(None))
        total = s.scalar(select(func.count()).select_from(Client).where(*where)) or 0
        counts = (
            select(Project.client_id, func.count().label("n")).group_by(Project.client_id).subquery()
        )
        rows = s.execute(
            select(Client, func.coalesce(counts.c.n, 0))
            .outerjoin(counts, counts.c.client_id == Client.id)
            .where(*where)
            .order_by(func.lower(Client.name))
            .limit(page_size)
            .offset((max(page, 1) - 1) * page_size)
        ).all()
    return [
        ClientView(c.id, c.name, c.contact_email, c.notes, n, c.created_at, c.archived_at) for c, n in rows
    ], total


def client_choices(actor: Actor) -> dict[int, str]:
    """Active clients by id, for pickers."""
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        rows = s.execute(
            select(Client.id, Client.name)
            .where(Client.workspace_id == actor.workspace_id, Client.archived_at.is_(None))
            .order_by(func.lower(Client.name))
        ).all()
    return {i: n for i, n in rows}
