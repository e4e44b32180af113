"""Who an MCP tool call acts as: the workspace API key it presented, checked for the tool's scope.

A key acts as the member who created it (as a workflow webhook acts as its creator), in the
key's workspace: every service still checks that member's current role, so a key outlives
neither its creator's membership nor a demotion. The key is checked again on every call, so
revoking it stops the next call, not the next session.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from engine.api_keys import verify_api_key
from engine.errors import InvalidCredentials
from engine.permissions import Actor

ENV_VAR = "METERBOOK_API_KEY"


@dataclass(frozen=True)
class Caller:
    actor: Actor
    api_key_id: int
    scopes: tuple[str, ...]


def bearer(headers: Mapping[str, str] | None) -> str | None:
    """The key in an ``Authorization: Bearer …`` header, or None."""
    if not headers:
        return None
    value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    scheme, _, token = value.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def authorise(secret: str | None, scope: str, *, where: str) -> Caller:
    """The caller a presented key stands for, if it is valid and has ``scope``; else InvalidCredentials.

    ``where`` tells the caller how to present a key on this transport.
    """
    if not secret:
        raise InvalidCredentials(f"No Meterbook API key was presented: {where}.")
    key = verify_api_key(secret, scope)
    if key.created_by is None:
        raise InvalidCredentials("This API key's creator is no longer a member; create a new key.")
    return Caller(Actor(key.created_by, key.workspace_id), key.id, tuple(key.scopes))
