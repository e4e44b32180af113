"""People and workspaces: users, passwords, sign-in sessions, memberships and invitations.

Passwords are argon2 hashes. Sign-in sessions are server-side rows keyed by the hash of a
random token that the browser keeps in a cookie, so a refresh keeps you signed in and
signing out (or an admin) can revoke the session. Single sign-on (``st.login``) maps a
verified identity to a user in ``engine.sso`` and then opens the same session here.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from engine import audit, db
from engine.billing import limits as plan_limits
from engine.config import get_settings
from engine.dbtypes import utcnow
from engine.errors import (
    AccountLocked,
    Conflict,
    InvalidCredentials,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from engine.models import ROLES, AuthSession, Invitation, Membership, User, Workspace
from engine.permissions import RANK, Actor, authorize, role_of

def _make_hasher() -> PasswordHasher:
    # Tests create many accounts; they may ask for argon2's cheapest parameters.
    if os.environ.get("METERBOOK_ARGON2_PROFILE") == "test":
        return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    return PasswordHasher()


_hasher = _make_hasher()
# Verified against when the email is unknown, so a miss costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("meterbook-timing-equaliser")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
COMMON_PASSWORDS = {"password123", "1234567890", "qwertyuiop", "letmein123", "iloveyou12", "passw0rd12"}
INVITATION_DAYS = 7


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- validation --------------------------------------------------------------------------


def normalize_email(email: str) -> str:
    email = (email or "").strip().lower()
    if not EMAIL_RE.match(email) or len(email) > 320:
        raise InvalidInput(f"“{email or '(empty)'}” is not an email address.")
    return email


def check_password(password: str, email: str = "") -> None:
    minimum = get_settings().password_min_length
    if len(password or "") < minimum:
        raise InvalidInput(f"Choose a password of at least {minimum} characters.")
    lowered = password.lower()
    if lowered in COMMON_PASSWORDS or len(set(password)) < 4 or (email and email.split("@")[0] in lowered):
        raise InvalidInput("That password is too easy to guess; use a longer phrase that is not your email.")


def check_name(name: str, what: str = "Name") -> str:
    name = (name or "").strip()
    if not name:
        raise InvalidInput(f"{what} cannot be empty.")
    if len(name) > 200:
        raise InvalidInput(f"{what} must be 200 characters or fewer.")
    return name


def check_timezone(tz: str) -> str:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"“{tz}” is not a known time zone (try Europe/Berlin or UTC).") from None
    return tz


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInput(f"Role must be one of {', '.join(ROLES)}.")
    return role


# --- users and sign-in -------------------------------------------------------------------


def _new_user(session: Session, email: str, name: str, password: str | None) -> User:
    email = normalize_email(email)
    name = check_name(name)
    if password is not None:
        check_password(password, email)
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict(f"An account for {email} already exists; sign in instead.")
    user = User(email=email, name=name, password_hash=_hasher.hash(password) if password else None)
    session.add(user)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"An account for {email} already exists; sign in instead.") from None
    return user


def create_user(email: str, name: str, password: str) -> User:
    with db.transaction() as s:
        return _new_user(s, email, name, password)


def needs_first_run() -> bool:
    with db.read_session() as s:
        return s.scalar(select(func.count()).select_from(User)) == 0


def create_first_owner(email: str, name: str, password: str, workspace_name: str, timezone: str = "UTC") -> tuple[User, Workspace]:
    """First start: the first account owns the first workspace. Refused once anyone exists."""
    with db.transaction() as s:
        if s.scalar(select(func.count()).select_from(User)):
            raise Conflict("Meterbook is already set up; sign in, or ask an admin for an invitation.")
        user = _new_user(s, email, name, password)
        workspace = _new_workspace(s, user, workspace_name, timezone)
        return user, workspace


def authenticate(email: str, password: str) -> User:
    settings = get_settings()
    try:
        email = normalize_email(email)
    except InvalidInput:
        raise InvalidCredentials("Email or password is incorrect.") from None
    now = utcnow()
    locked_error: AccountLocked | None = None
    with db.transaction() as s:
        db.write_lock(s)  # read then write: on SQLite a writer in between would fail this sign-in at once
        user = s.scalar(select(User).where(User.email == email).with_for_update())
        if user is None or user.password_hash is None:
            _verify(_DUMMY_HASH, password)
            raise InvalidCredentials("Email or password is incorrect.")
        if user.locked_until and user.locked_until > now:
            raise _locked(user.locked_until, now)
        if _verify(user.password_hash, password):
            user.failed_logins = 0
            user.locked_until = None
            user.last_login_at = now
            if _hasher.check_needs_rehash(user.password_hash):
                user.password_hash = _hasher.hash(password)
            return user
        user.failed_logins += 1
        if user.failed_logins >= settings.login_max_failures:
            user.locked_until = now + timedelta(minutes=settings.login_lockout_minutes)
            user.failed_logins = 0
            audit.record(s, "user.locked", workspace_id=None, actor_user_id=user.id, object_type="user", object_id=user.id)
            locked_error = _locked(user.locked_until, now)
    # The failure count is committed above; only then tell the caller.
    raise locked_error or InvalidCredentials("Email or password is incorrect.")


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password or "")
    except (VerificationError, InvalidHashError):
        return False


def _locked(until: datetime, now: datetime) -> AccountLocked:
    minutes = max(1, int((until - now).total_seconds() // 60) + 1)
    return AccountLocked(f"Too many failed sign-ins. This account is locked for {minutes} more minute(s).", until)


def start_session(user_id: int) -> str:
    token = secrets.token_urlsafe(32)
    with db.transaction() as s:
        s.add(
            AuthSession(
                token_hash=token_hash(token),
                user_id=user_id,
                expires_at=utcnow() + timedelta(days=get_settings().session_days),
            )
        )
    return token


def login(email: str, password: str) -> tuple[str, User]:
    user = authenticate(email, password)
    return start_session(user.id), user


def session_user(token: str | None) -> User | None:
    """The user a browser's session token belongs to, or None when it is unknown, expired or revoked."""
    if not token:
        return None
    with db.read_session() as s:
        row = s.execute(
            select(User, AuthSession)
            .join(AuthSession, AuthSession.user_id == User.id)
            .where(AuthSession.token_hash == token_hash(token))
        ).first()
    if row is None:
        return None
    user, auth = row
    if auth.revoked_at is not None or auth.expires_at <= utcnow():
        return None
    return user


def end_session(token: str | None) -> None:
    if not token:
        return
    with db.transaction() as s:
        auth = s.scalar(select(AuthSession).where(AuthSession.token_hash == token_hash(token)))
        if auth is not None and auth.revoked_at is None:
            auth.revoked_at = utcnow()


def revoke_sessions(user_id: int) -> int:
    with db.transaction() as s:
        sessions = s.scalars(
            select(AuthSession).where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
        ).all()
        for auth in sessions:
            auth.revoked_at = utcnow()
        return len(sessions)


def get_user(user_id: int) -> User:
    with db.read_session() as s:
        user = s.get(User, user_id)
    if user is None:
        raise NotFound("That user no longer exists.")
    return user


def change_password(user_id: int, current: str, new: str) -> None:
    with db.transaction() as s:
        user = s.get(User, user_id)
        if user is None or user.password_hash is None or not _verify(user.password_hash, current):
            raise InvalidCredentials("Your current password is incorrect.")
        check_password(new, user.email)
        user.password_hash = _hasher.hash(new)
        audit.record(s, "user.password_changed", workspace_id=None, actor_user_id=user.id, object_type="user", object_id=user.id)


# --- workspaces and members --------------------------------------------------------------


def _new_workspace(session: Session, owner: User, name: str, timezone: str) -> Workspace:
    workspace = Workspace(name=check_name(name, "Workspace name"), timezone=check_timezone(timezone))
    session.add(workspace)
    session.flush()
    session.add(Membership(workspace_id=workspace.id, user_id=owner.id, role="owner"))
    audit.record(session, "workspace.created", workspace_id=workspace.id, actor_user_id=owner.id, object_type="workspace", object_id=workspace.id)
    return workspace


def create_workspace(user_id: int, name: str, timezone: str = "UTC") -> Workspace:
    with db.transaction() as s:
        user = s.get(User, user_id)
        if user is None:
            raise NotFound("That user no longer exists.")
        return _new_workspace(s, user, name, timezone)


@dataclass(frozen=True)
class WorkspaceAccess:
    workspace: Workspace
    role: str


def workspaces_for(user_id: int) -> list[WorkspaceAccess]:
    with db.read_session() as s:
        rows = s.scalars(
            select(Membership).where(Membership.user_id == user_id).order_by(Membership.workspace_id)
        ).all()
    return [WorkspaceAccess(m.workspace, m.role) for m in rows]


def get_workspace(actor: Actor) -> tuple[Workspace, str]:
    with db.read_session() as s:
        role = role_of(s, actor)
        return s.get(Workspace, actor.workspace_id), role


def update_workspace(actor: Actor, *, name: str, timezone: str) -> Workspace:
    with db.transaction() as s:
        authorize(s, actor, "workspace.settings")
        workspace = s.get(Workspace, actor.workspace_id)
        before = {"name": workspace.name, "timezone": workspace.timezone}
        workspace.name = check_name(name, "Workspace name")
        workspace.timezone = check_timezone(timezone)
        audit.record_for(s, actor, "workspace.updated", "workspace", workspace.id, before=before)
        return workspace


@dataclass(frozen=True)
class Member:
    user_id: int
    email: str
    name: str
    role: str
    joined_at: datetime


def list_members(actor: Actor) -> list[Member]:
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        rows = s.scalars(
            select(Membership).where(Membership.workspace_id == actor.workspace_id).order_by(Membership.id)
        ).all()
    return [Member(m.user_id, m.user.email, m.user.name, m.role, m.created_at) for m in rows]


def _membership(session: Session, workspace_id: int, user_id: int) -> Membership:
    m = session.scalar(
        select(Membership).where(Membership.workspace_id == workspace_id, Membership.user_id == user_id).with_for_update(of=Membership)
    )
    if m is None:
        raise NotFound("That person is not a member of this workspace.")
    return m


def _owner_count(session: Session, workspace_id: int) -> int:
    return session.scalar(
        select(func.count()).select_from(Membership).where(
            Membership.workspace_id == workspace_id, Membership.role == "owner"
        )
    )


def _guard_owner_change(session: Session, actor: Actor, actor_role: str, target: Membership, new_role: str | None) -> None:
    """Only owners touch the owner role, and a workspace never loses its last owner."""
    touches_owner = target.role == "owner" or new_role == "owner"
    if touches_owner and actor_role != "owner":
        raise PermissionDenied("Only an owner can change or remove an owner, or make someone an owner.")
    if target.role == "owner" and new_role != "owner" and _owner_count(session, actor.workspace_id) <= 1:
        raise Conflict("This is the workspace's only owner. Make someone else an owner first.")
    if RANK[target.role] > RANK[actor_role]:
        raise PermissionDenied("You cannot change a member whose role is above yours.")


def change_role(actor: Actor, user_id: int, role: str) -> None:
    check_role(role)
    with db.transaction() as s:
        actor_role = authorize(s, actor, "member.manage")
        target = _membership(s, actor.workspace_id, user_id)
        if target.role == role:
            return
        _guard_owner_change(s, actor, actor_role, target, role)
        audit.record_for(s, actor, "member.role_changed", "user", user_id, before=target.role, after=role)
        target.role = role


def remove_member(actor: Actor, user_id: int) -> None:
    with db.transaction() as s:
        actor_role = authorize(s, actor, "member.manage")
        target = _membership(s, actor.workspace_id, user_id)
        _guard_owner_change(s, actor, actor_role, target, None)
        audit.record_for(s, actor, "member.removed", "user", user_id, role=target.role, email=target.user.email)
        s.delete(target)


# --- invitations -------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingInvitation:
    id: int
    email: str
    role: str
    created_at: datetime
    expires_at: datetime


def invite(actor: Actor, email: str, role: str) -> str:
    """Create an invitation and return its one-time token (for the link; it is stored hashed)."""
    email = normalize_email(email)
    check_role(role)
    with db.transaction() as s:
        actor_role = authorize(s, actor, "invitation.manage")
        if role == "owner" and actor_role != "owner":
            raise PermissionDenied("Only an owner can invite another owner.")
        member = s.scalar(
            select(Membership.id).join(User).where(Membership.workspace_id == actor.workspace_id, User.email == email)
        )
        if member is not None:
            raise Conflict(f"{email} is already a member of this workspace.")
        now = utcnow()
        pending = s.scalar(
            select(Invitation.id).where(
                Invitation.workspace_id == actor.workspace_id,
                Invitation.email == email,
                Invitation.accepted_at.is_(None),
                Invitation.revoked_at.is_(None),
                Invitation.expires_at > now,
            )
        )
        if pending is not None:
            raise Conflict(f"{email} already has a pending invitation; revoke it to send a new one.")
        plan_limits.check_members(s, actor.workspace_id)
        token = secrets.token_urlsafe(24)
        inv = Invitation(
            workspace_id=actor.workspace_id,
            email=email,
            role=role,
            token_hash=token_hash(token),
            invited_by=actor.user_id,
            expires_at=now + timedelta(days=INVITATION_DAYS),
        )
        s.add(inv)
        s.flush()
        audit.record_for(s, actor, "invitation.created", "invitation", inv.id, email=email, role=role)
    return token


def list_invitations(actor: Actor) -> list[PendingInvitation]:
    with db.read_session() as s:
        authorize(s, actor, "invitation.manage")
        rows = s.scalars(
            select(Invitation)
            .where(
                Invitation.workspace_id == actor.workspace_id,
                Invitation.accepted_at.is_(None),
                Invitation.revoked_at.is_(None),
                Invitation.expires_at > utcnow(),
            )
            .order_by(Invitation.id.desc())
        ).all()
    return [PendingInvitation(i.id, i.email, i.role, i.created_at, i.expires_at) for i in rows]


def revoke_invitation(actor: Actor, invitation_id: int) -> None:
    with db.transaction() as s:
        authorize(s, actor, "invitation.manage")
        inv = s.get(Invitation, invitation_id)
        if inv is None or inv.workspace_id != actor.workspace_id:
            raise NotFound("That invitation does not exist.")
        inv.revoked_at = utcnow()
        audit.record_for(s, actor, "invitation.revoked", "invitation", inv.id, email=inv.email)


def _open_invitation(session: Session, token: str) -> Invitation:
    inv = session.scalar(select(Invitation).where(Invitation.token_hash == token_hash(token or "")).with_for_update())
    if inv is None or inv.revoked_at is not None:
        raise NotFound("This invitation link is not valid. Ask for a new one.")
    if inv.accepted_at is not None:
        raise Conflict("This invitation has already been used; sign in instead.")
    if inv.expires_at <= utcnow():
        raise InvalidInput("This invitation has expired. Ask for a new one.")
    return inv


def invitation_email(token: str) -> str:
    with db.read_session() as s:
        return _open_invitation(s, token).email


def accept_invitation(token: str, *, name: str, password: str) -> User:
    """Join through an invitation link, creating the account if the email has none yet."""
    with db.transaction() as s:
        inv = _open_invitation(s, token)
        user = s.scalar(select(User).where(User.email == inv.email))
        if user is None:
            user = _new_user(s, inv.email, name, password)
        elif user.password_hash is None or not _verify(user.password_hash, password):
            raise InvalidCredentials(f"An account for {inv.email} exists; enter its password to join.")
        s.add(Membership(workspace_id=inv.workspace_id, user_id=user.id, role=inv.role))
        inv.accepted_at = utcnow()
        audit.record(s, "invitation.accepted", workspace_id=inv.workspace_id, actor_user_id=user.id, object_type="invitation", object_id=inv.id)
        return user
