"""Single sign-on: mapping an identity that ``st.login`` verified (OIDC) to a Meterbook user.

Who may come in this way is decided in ``oidc_user``; ``oidc_login`` then opens the same
server-side session as a password sign-in (``accounts.start_session``). Accounts,
workspaces and invitations themselves are ``engine.accounts``; this module only decides
which of them an identity is, and links or creates the account when the rules allow.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import audit, db
from engine.accounts import _new_user, normalize_email, start_session
from engine.dbtypes import utcnow
from engine.errors import Conflict, InvalidInput, PermissionDenied
from engine.models import Invitation, Membership, User


def oidc_user(issuer: str, subject: str, email: str | None, name: str | None, *, email_verified: bool | None = None) -> User:
    """Map an identity that ``st.login`` verified to a Meterbook user.

    Meterbook has no self sign-up (people arrive by invitation), and single sign-on keeps
    to that, even with a provider where anyone can hold an account:

    1. an identity seen before (same issuer and subject) is that user, whatever its email says now;
    2. otherwise the email must be present and not marked unverified (``email_verified``
       absent counts as vouched for: the administrator chose the provider, and some, such as
       Microsoft Entra ID, never send the claim);
    3. an account with that email is linked to the identity, unless it is already linked to
       another identity at the same provider (the address changed hands);
    4. an email with no account but an open invitation gets an account (no password) and
       joins the inviting workspace;
    5. anyone else is refused, told to ask for an invitation.

    Open invitations addressed to the user's email are accepted at every such sign-in when the
    provider vouches for that email: an account made through single sign-on has no password,
    so it could not accept an invitation link.
    """
    key = f"{issuer}|{subject}"
    with db.transaction() as s:
        user = s.scalar(select(User).where(User.oidc_subject == key).with_for_update())
        if user is None:
            user = _link_oidc_identity(s, key, issuer, _vouched_email(email, email_verified), name)
        if _vouches_for(user, email, email_verified):
            _accept_open_invitations(s, user)
        user.last_login_at = utcnow()
        return user


def oidc_login(claims: Mapping[str, Any]) -> tuple[str, User]:
    """``login`` for the claims of an ID token (``st.user``): a new session token and its user."""
    issuer, subject = claims.get("iss"), claims.get("sub")
    if not issuer or not subject:
        raise InvalidInput("The identity provider's answer has no issuer or subject; check the [auth] settings.")
    verified = claims.get("email_verified")
    if isinstance(verified, str):  # some providers send the claim as a string
        verified = verified.strip().lower() == "true"
    email, name = claims.get("email"), claims.get("name")
    user = oidc_user(
        str(issuer), str(subject), str(email) if email else None, str(name) if name else None,
        email_verified=None if verified is None else bool(verified),
    )
    return start_session(user.id), user


def _vouched_email(email: str | None, email_verified: bool | None) -> str:
    if not email:
        raise InvalidInput(
            "Your identity provider did not share your email address, which Meterbook needs to find your "
            "account. Ask your administrator to release the “email” scope to Meterbook."
        )
    email = normalize_email(email)
    if email_verified is False:
        raise PermissionDenied(f"Your identity provider has not verified {email}. Verify it there, then sign in again.")
    return email


def _vouches_for(user: User, email: str | None, email_verified: bool | None) -> bool:
    if not email or email_verified is False:
        return False
    try:
        return normalize_email(email) == user.email
    except InvalidInput:
        return False


def _link_oidc_identity(session: Session, key: str, issuer: str, email: str, name: str | None) -> User:
    user = session.scalar(select(User).where(User.email == email).with_for_update())
    if user is not None:
        if user.oidc_subject and user.oidc_subject.startswith(f"{issuer}|"):
            raise Conflict(
                f"The account for {email} belongs to a different identity at this provider. "
                "Sign in with that identity or with your password, or ask an admin for help."
            )
    elif _open_invitations(session, email):
        display = (name or "").strip()[:200] or email.split("@")[0]
        user = _new_user(session, email, display, None)
    else:
        raise PermissionDenied(
            f"There is no Meterbook account for {email}. Ask a workspace admin to invite {email}, then sign in again."
        )
    user.oidc_subject = key
    audit.record(session, "user.sso_linked", workspace_id=None, actor_user_id=user.id, object_type="user", object_id=user.id, issuer=issuer)
    return user


def _open_invitations(session: Session, email: str) -> list[Invitation]:
    return list(
        session.scalars(
            select(Invitation)
            .where(
                Invitation.email == email,
                Invitation.accepted_at.is_(None),
                Invitation.revoked_at.is_(None),
                Invitation.expires_at > utcnow(),
            )
            .order_by(Invitation.id)
            .with_for_update()
        )
    )


def _accept_open_invitations(session: Session, user: User) -> None:
    member_of = set(session.scalars(select(Membership.workspace_id).where(Membership.user_id == user.id)))
    for inv in _open_invitations(session, user.email):
        if inv.workspace_id not in member_of:
            session.add(Membership(workspace_id=inv.workspace_id, user_id=user.id, role=inv.role))
            member_of.add(inv.workspace_id)
        inv.accepted_at = utcnow()
        audit.record(session, "invitation.accepted", workspace_id=inv.workspace_id, actor_user_id=user.id, object_type="invitation", object_id=inv.id, via="sso")
