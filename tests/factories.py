"""Small builders for test data, all through the engine's own services."""

from __future__ import annotations

from engine import accounts
from engine.permissions import Actor

PASSWORD = "correct horse battery"


def owner(email: str = "owner@example.com", workspace: str = "Acme Analytics") -> Actor:
    user, ws = accounts.create_first_owner(email, "Olivia Owner", PASSWORD, workspace)
    return Actor(user.id, ws.id)


def member(owner_actor: Actor, email: str, role: str) -> Actor:
    token = accounts.invite(owner_actor, email, role)
    user = accounts.accept_invitation(token, name=email.split("@")[0].title(), password=PASSWORD)
    return Actor(user.id, owner_actor.workspace_id)
