"""Who may do what: one table of actions and the lowest role allowed to perform each.

Services call ``authorize`` inside their own transaction, reading the actor's role afresh,
so a demoted member loses rights at once and a button the UI forgot to hide still fails.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.errors import NotFound, PermissionDenied
from engine.models import ROLES, Membership

RANK = {role: rank for rank, role in enumerate(reversed(ROLES))}  # viewer 0 … owner 3

PERMISSIONS: dict[str, str] = {
    "workspace.read": "viewer",
    "usage.read": "viewer",
    "provider.read": "viewer",
    "project.write": "editor",
    "client.write": "editor",
    "member.manage": "admin",
    "invitation.manage": "admin",
    "api_key.manage": "admin",
    "audit.read": "admin",
    "price.write": "admin",
    "provider.write": "admin",
    "generate": "editor",
    "route.write": "admin",
    "workspace.settings": "admin",
    "owner.manage": "owner",
    "notebook.read": "viewer",
    "notebook.write": "editor",
    "notebook.manage": "admin",
    "budget.read": "viewer",
    "budget.write": "admin",  # editors spend; letting them lift their own limits would defeat the budget
    "alert.manage": "editor",
    "asset.write": "editor",
    "answer.rate": "editor",
    "workflow.read": "viewer",
    "workflow.write": "editor",
    "workflow.run": "editor",  # runs spend money through their AI steps, like "generate"
    "workflow.approve": "editor",
    "workflow.credentials": "admin",
    "report.write": "editor",
    "billing.read": "viewer",
    "billing.manage": "admin",
    "connector.manage": "admin",  # a connector can start a command on this host and holds a vendor key
}

ACTION_LABELS = {
    "project.write": "edit projects",
    "client.write": "edit clients",
    "member.manage": "manage members",
    "invitation.manage": "invite people",
    "api_key.manage": "manage API keys",
    "audit.read": "read the audit log",
    "price.write": "change prices",
    "provider.write": "manage provider connections",
    "generate": "run AI calls (they spend money)",
    "route.write": "change model routing",
    "workspace.settings": "change workspace settings",
    "owner.manage": "grant or remove the owner role",
    "notebook.write": "create, edit or run notebooks",
    "notebook.manage": "delete or unshare another member's notebook",
    "budget.write": "create or change budgets",
    "alert.manage": "acknowledge or snooze alerts",
    "answer.rate": "rate answers",
    "asset.write": "rename, tag, archive or delete assets",
    "workflow.write": "create, edit or delete workflows",
    "workflow.run": "run or cancel workflows",
    "workflow.approve": "approve or reject workflow steps",
    "workflow.credentials": "manage workflow credentials",
    "report.write": "create, edit, schedule or send reports",
    "billing.manage": "change the plan or payment details",
    "connector.manage": "connect, change or delete connectors",
}


@dataclass(frozen=True)
class Actor:
    """A person acting in one workspace. Roles are looked up, never trusted from here."""

    user_id: int
    workspace_id: int


def role_of(session: Session, actor: Actor) -> str:
    role = session.scalar(
        select(Membership.role).where(
            Membership.workspace_id == actor.workspace_id, Membership.user_id == actor.user_id
        )
    )
    if role is None:
        raise PermissionDenied("You are not a member of this workspace.")
    return role


def can(role: str, action: str) -> bool:
    return RANK[role] >= RANK[PERMISSIONS[action]]


def authorize(session: Session, actor: Actor, action: str) -> str:
    """Return the actor's role, or raise ``PermissionDenied`` naming what is needed."""
    role = role_of(session, actor)
    if not can(role, action):
        needed = PERMISSIONS[action]
        raise PermissionDenied(
            f"Your role ({role}) cannot {ACTION_LABELS.get(action, action)}: that needs the "
            f"{needed} role or higher. Ask an admin or the owner of this workspace."
        )
    return role


def in_workspace(session: Session, model, obj_id: int, workspace_id: int, what: str):
    """The ``model`` row ``obj_id`` if it belongs to the workspace, else NotFound naming ``what``:
    the same answer whether it is missing or another workspace's, so an id reveals nothing."""
    obj = session.get(model, obj_id)
    if obj is None or obj.workspace_id != workspace_id:
        raise NotFound(f"That {what} does not exist in this workspace.")
    return obj
