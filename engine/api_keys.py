"""Workspace API keys: shown once, stored as a SHA-256 hash, visible by prefix, scoped, expiring, revocable.

A key is ``mb_<prefix>_<secret>``; the secret has 256 bits of entropy, so a plain hash
(not a slow password hash) is the right tool and lets a key be checked on every request.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from engine import audit, db
from engine.accounts import check_name, token_hash
from engine.dbtypes import utcnow
from engine.errors import InvalidCredentials, InvalidInput, NotFound
from engine.models import ApiKey
from engine.permissions import Actor, authorize

SCOPES = {
    "generate": "Run generations through the one generation path",
    "usage:read": "Read spend and usage",
    "workflows:read": "List workflows and runs",
    "workflows:run": "Start workflow runs",
    "projects:write": "Create and edit projects",
    "budgets:read": "Read budgets: spent, limit, remaining, forecast",
}


@dataclass(frozen=True)
class ApiKeyView:
    id: int
    workspace_id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    created_by: int | None = None  # the member the key acts as (services check that member's role)

    @property
    def status(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= utcnow():
            return "expired"
        return "active"


def _view(k: ApiKey) -> ApiKeyView:
    return ApiKeyView(k.id, k.workspace_id, k.name, k.prefix, list(k.scopes), k.created_at, k.expires_at, k.revoked_at, k.last_used_at,
                      k.created_by)


def create_api_key(actor: Actor, name: str, scopes: list[str], expires_at: datetime | None = None) -> tuple[ApiKeyView, str]:
    """Create a key and return it with its secret, which is never available again."""
    name = check_name(name, "Key name")
    unknown = sorted(set(scopes) - SCOPES.keys())
    if not scopes or unknown:
        raise InvalidInput(f"Choose at least one scope from: {', '.join(SCOPES)}." if not unknown else f"Unknown scope(s): {', '.join(unknown)}.")
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidInput("The expiry date must be in the future.")
    prefix = f"mb_{secrets.token_hex(4)}"
    secret = f"{prefix}_{secrets.token_urlsafe(32)}"
    with db.transaction() as s:
        authorize(s, actor, "api_key.manage")
        key = ApiKey(
            workspace_id=actor.workspace_id,
            name=name,
            prefix=prefix,
            key_hash=token_hash(secret),
            scopes=sorted(set(scopes)),
            created_by=actor.user_id,
            expires_at=expires_at,
        )
        s.add(key)
        s.flush()
        audit.record_for(s, actor, "api_key.created", "api_key", key.id, prefix=prefix, scopes=key.scopes)
        return _view(key), secret


def list_api_keys(actor: Actor) -> list[ApiKeyView]:
    with db.read_session() as s:
        authorize(s, actor, "api_key.manage")
        keys = s.scalars(select(ApiKey).where(ApiKey.workspace_id == actor.workspace_id).order_by(ApiKey.id.desc())).all()
    return [_view(k) for k in keys]


def revoke_api_key(actor: Actor, key_id: int) -> None:
    with db.transaction() as s:
        authorize(s, actor, "api_key.manage")
        key = s.get(ApiKey, key_id)
        if key is None or key.workspace_id != actor.workspace_id:
            raise NotFound("That API key does not exist.")
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            audit.record_for(s, actor, "api_key.revoked", "api_key", key.id, prefix=key.prefix)


def verify_api_key(secret: str, scope: str) -> ApiKeyView:
    """Check a presented key for one scope and note its use; the error never says which part failed."""
    with db.transaction() as s:
        key = s.scalar(select(ApiKey).where(ApiKey.key_hash == token_hash(secret or "")))
        now = utcnow()
        if key is None or key.revoked_at is not None or (key.expires_at and key.expires_at <= now):
            raise InvalidCredentials("This API key is not valid (unknown, revoked or expired).")
        if scope not in key.scopes:
            raise InvalidCredentials(f"This API key does not have the “{scope}” scope.")
        key.last_used_at = now
        return _view(key)
