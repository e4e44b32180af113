"""Who single sign-on lets in: the mapping from an identity ``st.login`` verified to a Meterbook user."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from engine import accounts, db, sso
from engine.dbtypes import utcnow
from engine.errors import Conflict, InvalidInput, PermissionDenied
from engine.models import AuditEvent, Invitation, User
from engine.permissions import Actor
from tests.factories import PASSWORD, owner

IDP = "https://idp.example"


def _users() -> int:
    with db.read_session() as s:
        return s.scalar(select(func.count()).select_from(User))


def _roles(user_id: int) -> dict[int, str]:
    return {a.workspace.id: a.role for a in accounts.workspaces_for(user_id)}


def test_an_existing_account_is_linked_by_email_and_then_found_by_subject(database):
    boss = owner()
    user = sso.oidc_user(IDP, "sub-1", "Owner@Example.com", "Olivia", email_verified=True)
    assert user.id == boss.user_id and user.oidc_subject == f"{IDP}|sub-1"
    # The provider's email may change later; the subject still finds the account.
    assert sso.oidc_user(IDP, "sub-1", "olivia.new@example.com", None).id == boss.user_id
    # Password sign-in keeps working for a linked account.
    assert accounts.authenticate("owner@example.com", PASSWORD).id == boss.user_id
    with db.read_session() as s:
        linked = s.scalars(select(AuditEvent).where(AuditEvent.action == "user.sso_linked")).all()
    assert [(e.object_type, e.object_id, e.detail) for e in linked] == [("user", str(boss.user_id), {"issuer": IDP})]


def test_an_email_without_account_or_invitation_is_refused(database):
    owner()
    with pytest.raises(PermissionDenied, match="Ask a workspace admin to invite stranger@example.com"):
        sso.oidc_user(IDP, "sub-9", "stranger@example.com", "Stranger")
    assert _users() == 1


def test_an_invited_email_gets_an_account_and_joins(database):
    boss = owner()
    accounts.invite(boss, "new@example.com", "editor")
    user = sso.oidc_user(IDP, "sub-2", "new@example.com", "  Nia New  ")
    assert (user.email, user.name, user.password_hash) == ("new@example.com", "Nia New", None)
    assert _roles(user.id) == {boss.workspace_id: "editor"}
    assert accounts.list_invitations(boss) == []
    # The next sign-in finds the same account; no second membership.
    assert sso.oidc_user(IDP, "sub-2", "new@example.com", None).id == user.id
    assert _roles(user.id) == {boss.workspace_id: "editor"}
    # An account without a password cannot be signed into with one.
    with pytest.raises(accounts.InvalidCredentials):
        accounts.authenticate("new@example.com", "")


@pytest.mark.parametrize("spoil", ["revoked_at", "expires_at"])
def test_a_revoked_or_expired_invitation_does_not_let_anyone_in(database, spoil):
    boss = owner()
    accounts.invite(boss, "new@example.com", "viewer")
    with db.transaction() as s:
        invitation = s.scalar(select(Invitation))
        setattr(invitation, spoil, utcnow() - timedelta(minutes=1))
    with pytest.raises(PermissionDenied, match="no Meterbook account"):
        sso.oidc_user(IDP, "sub-3", "new@example.com", None)
    assert _users() == 1


def test_an_unverified_email_is_neither_linked_nor_invited(database):
    boss = owner()
    accounts.invite(boss, "new@example.com", "editor")
    for email in ("owner@example.com", "new@example.com"):
        with pytest.raises(PermissionDenied, match="has not verified"):
            sso.oidc_user(IDP, "sub-4", email, None, email_verified=False)
    with db.read_session() as s:
        assert s.scalar(select(func.count()).select_from(User).where(User.oidc_subject.is_not(None))) == 0
    assert _users() == 1


def test_an_identity_without_email_is_asked_for_one(database):
    owner()
    with pytest.raises(InvalidInput, match="did not share your email"):
        sso.oidc_user(IDP, "sub-5", None, "Nameless")


def test_an_account_linked_to_another_identity_of_the_same_provider_is_not_taken_over(database):
    boss = owner()
    sso.oidc_user(IDP, "sub-1", "owner@example.com", None)
    with pytest.raises(Conflict, match="different identity"):
        sso.oidc_user(IDP, "sub-other", "owner@example.com", None)
    # A different provider vouching for the same email re-links it (e.g. the company changed providers).
    moved = sso.oidc_user("https://new-idp.example", "x-1", "owner@example.com", None)
    assert moved.id == boss.user_id and moved.oidc_subject == "https://new-idp.example|x-1"


def test_open_invitations_are_accepted_when_the_provider_vouches_for_the_email(database):
    first = owner()
    other = accounts.create_user("boss2@example.com", "Bo Boss", PASSWORD)
    second = Actor(other.id, accounts.create_workspace(other.id, "Second Co").id)
    accounts.invite(first, "new@example.com", "viewer")
    user = sso.oidc_user(IDP, "sub-6", "new@example.com", None)
    accounts.invite(second, "new@example.com", "admin")
    # The provider no longer vouches for that address: the invitation waits.
    sso.oidc_user(IDP, "sub-6", "new@example.com", None, email_verified=False)
    sso.oidc_user(IDP, "sub-6", "someone.else@example.com", None)
    assert _roles(user.id) == {first.workspace_id: "viewer"}
    sso.oidc_user(IDP, "sub-6", "new@example.com", None)
    assert _roles(user.id) == {first.workspace_id: "viewer", second.workspace_id: "admin"}


def test_oidc_login_reads_the_id_token_claims_and_opens_a_session(database):
    boss = owner()
    claims = {"iss": IDP, "sub": "sub-7", "email": "owner@example.com", "email_verified": "true",
              "name": "Olivia", "is_logged_in": True, "provider": "acme"}
    token, user = sso.oidc_login(claims)
    assert user.id == boss.user_id
    assert accounts.session_user(token).id == boss.user_id
    with pytest.raises(PermissionDenied, match="has not verified"):
        sso.oidc_login({**claims, "sub": "sub-8", "email": "other@example.com", "email_verified": "false"})
    with pytest.raises(InvalidInput, match="no issuer or subject"):
        sso.oidc_login({**claims, "sub": None})
