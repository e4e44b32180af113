"""The audit log: who did what, when, to which object. Written in the same transaction as the change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine import db
from engine.models import AuditEvent, User
from engine.permissions import Actor, authorize


def record(
    session: Session,
    action: str,
    *,
    workspace_id: int | None,
    actor_user_id: int | None,
    object_type: str | None = None,
    object_id: object = None,
    **detail: Any,
) -> None:
    session.add(
        AuditEvent(
            workspace_id=workspace_id,
            actor_user_id=actor_user_id,
            action=action,
            object_type=object_type,
            object_id=None if object_id is None else str(object_id),
            detail=detail,
        )
    )


def record_for(session: Session, actor: Actor, action: str, object_type: str, object_id: object, **detail: Any) -> None:
    record(
        session,
        action,
        workspace_id=actor.workspace_id,
        actor_user_id=actor.user_id,
        object_type=object_type,
        object_id=object_id,
        **detail,
    )


@dataclass(frozen=True)
class AuditRow:
    created_at: Any
    actor: str
    action: str
    object: str
    detail: dict[str, Any]


def list_events(actor: Actor, *, page: int = 1, page_size: int = 50) -> tuple[list[AuditRow], int]:
    with db.read_session() as s:
        authorize(s, actor, "audit.read")
        where = AuditEvent.workspace_id == actor.workspace_id
        total = s.scalar(select(func.count()).select_from(AuditEvent).where(where)) or 0
        rows = s.execute(
            select(AuditEvent, User.email)
            .outerjoin(User, User.id == AuditEvent.actor_user_id)
            .where(where)
            .order_by(AuditEvent.id.desc())
            .limit(page_size)
            .offset((max(page, 1) - 1) * page_size)
        ).all()
    return [
        AuditRow(
            created_at=e.created_at,
            actor=email or "system",
            action=e.action,
            object=f"{e.object_type} {e.object_id}" if e.object_type else "",
            detail=e.detail or {},
        )
        for e, email in rows
    ], total
