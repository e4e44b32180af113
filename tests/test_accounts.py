import threading
from datetime import timedelta

import pytest
from sqlalchemy import text

from engine import accounts, db, sso
from engine.errors import AccountLocked, Conflict, InvalidCredentials, InvalidInput, NotFound, PermissionDenied
from engine.permissions import Actor
from tests.factories import PASSWORD, member, owner


def test_first_owner_then_setup_is_closed(database):
    assert accounts.needs_first_run()
    actor = owner()
    assert not accounts.needs_first_run()
    [access] = accounts.workspaces_for(actor.user_id)
    assert (access.workspace.name, access.role) == ("Acme Analytics", "owner")
    with pytest.raises(Conflict):
        accounts.create_first_owner("second@example.com", "Second", PASSWORD, "Other")


def test_duplicate_email_is_refused_case_insensitively(database):
    owner()
    with pytest.raises(Conflict, match="already exists"):
        accounts.create_user("OWNER@Example.com ", "Again", PASSWORD)


@pytest.mark.parametrize("password", ["short", "password123", "aaaaaaaaaaaa", "jane-the-analyst"])
def test_weak_passwords_are_refused_and_nothing_is_stored(database, password):
    with pytest.raises(InvalidInput):
        accounts.create_user("jane@example.com", "Jane", password)
    assert accounts.needs_first_run()


def test_wrong_password_then_lockout(database, monkeypatch):
    owner()
    for _ in range(4):
        with pytest.raises(InvalidCredentials):
            accounts.login("owner@example.com", "wrong password!!")
    with pytest.raises(AccountLocked) as locked:
        accounts.login("owner@example.com", "wrong password!!")
    # Even the right password is refused while locked.
    with pytest.raises(AccountLocked):
        accounts.login("owner@example.com", PASSWORD)
    later = locked.value.until + timedelta(seconds=1)
    monkeypatch.setattr(accounts, "utcnow", lambda: later)
    token, user = accounts.login("owner@example.com", PASSWORD)
    assert user.email == "owner@example.com" and token


def test_unknown_email_gets_the_same_answer(database):
    with pytest.raises(InvalidCredentials, match="Email or password is incorrect"):
        accounts.login("nobody@example.com", PASSWORD)


def test_session_survives_until_revoked(database):
    owner()
    token, user = accounts.login("owner@example.com", PASSWORD)
    assert accounts.session_user(token).id == user.id
    assert accounts.session_user("forged-token") is None
    accounts.end_session(token)
    assert accounts.session_user(token) is None


def test_expired_session_is_not_honoured(database, monkeypatch):
    owner()
    token, _ = accounts.login("owner@example.com", PASSWORD)
    future = accounts.utcnow() + timedelta(days=365)
    monkeypatch.setattr(accounts, "utcnow", lambda: future)
    assert accounts.session_user(token) is None


def test_roles_and_owner_protection(database):
    boss = owner()
    admin = member(boss, "admin@example.com", "admin")
    editor = member(boss, "editor@example.com", "editor")
    viewer = member(boss, "viewer@example.com", "viewer")
    assert {m.email: m.role for m in accounts.list_members(viewer)} == {
        "owner@example.com": "owner", "admin@example.com": "admin",
        "editor@example.com": "editor", "viewer@example.com": "viewer",
    }
    with pytest.raises(PermissionDenied):
        accounts.remove_member(editor, boss.user_id)
    with pytest.raises(PermissionDenied, match="Only an owner"):
        accounts.remove_member(admin, boss.user_id)
    with pytest.raises(PermissionDenied, match="Only an owner"):
        accounts.change_role(admin, editor.user_id, "owner")
    with pytest.raises(Conflict, match="only owner"):
        accounts.change_role(boss, boss.user_id, "admin")
    accounts.change_role(admin, viewer.user_id, "editor")
    accounts.remove_member(admin, editor.user_id)
    roles = {m.email: m.role for m in accounts.list_members(boss)}
    assert roles == {"owner@example.com": "owner", "admin@example.com": "admin", "viewer@example.com": "editor"}


def test_removed_member_loses_access_at_once(database):
    boss = owner()
    editor = member(boss, "editor@example.com", "editor")
    accounts.remove_member(boss, editor.user_id)
    with pytest.raises(PermissionDenied, match="not a member"):
        accounts.list_members(editor)


def test_invitations(database):
    boss = owner()
    token = accounts.invite(boss, "new@example.com", "editor")
    with pytest.raises(Conflict, match="pending invitation"):
        accounts.invite(boss, "new@example.com", "viewer")
    with pytest.raises(Conflict, match="already a member"):
        accounts.invite(boss, "owner@example.com", "viewer")
    assert [i.email for i in accounts.list_invitations(boss)] == ["new@example.com"]
    accounts.accept_invitation(token, name="New Person", password=PASSWORD)
    with pytest.raises(Conflict, match="already been used"):
        accounts.accept_invitation(token, name="New Person", password=PASSWORD)
    with pytest.raises(NotFound):
        accounts.accept_invitation("not-a-token", name="X", password=PASSWORD)
    assert accounts.list_invitations(boss) == []


def test_revoked_invitation_cannot_be_used(database):
    boss = owner()
    token = accounts.invite(boss, "new@example.com", "viewer")
    [inv] = accounts.list_invitations(boss)
    accounts.revoke_invitation(boss, inv.id)
    with pytest.raises(NotFound):
        accounts.accept_invitation(token, name="New", password=PASSWORD)


def test_viewer_cannot_invite_or_change_settings(database):
    boss = owner()
    viewer = member(boss, "viewer@example.com", "viewer")
    with pytest.raises(PermissionDenied):
        accounts.invite(viewer, "x@example.com", "viewer")
    with pytest.raises(PermissionDenied):
        accounts.update_workspace(viewer, name="Mine now", timezone="UTC")


def test_workspace_settings_validate_timezone(database):
    boss = owner()
    with pytest.raises(InvalidInput, match="time zone"):
        accounts.update_workspace(boss, name="Acme", timezone="Mars/Olympus")
    ws = accounts.update_workspace(boss, name="Acme EU", timezone="Europe/Berlin")
    assert (ws.name, ws.timezone) == ("Acme EU", "Europe/Berlin")


def test_oidc_identity_maps_to_existing_user_by_email(database):
    boss = owner()
    user = sso.oidc_user("https://idp.example", "sub-1", "Owner@Example.com", "Olivia")
    assert user.id == boss.user_id
    again = sso.oidc_user("https://idp.example", "sub-1", "changed@example.com", "Olivia")
    assert again.id == boss.user_id


def test_not_a_member_of_other_workspace(database):
    boss = owner()
    other = accounts.create_workspace(boss.user_id, "Second")
    stranger = accounts.create_user("stranger@example.com", "S", PASSWORD)
    with pytest.raises(PermissionDenied):
        accounts.list_members(Actor(stranger.id, other.id))


def test_a_sign_in_waits_for_another_writer_instead_of_failing(sqlite_database):
    """On SQLite a transaction that reads and then writes fails at once ("database is locked") when
    another connection commits in between; sign-in writes last_login_at, so it takes the lock first."""
    owner()
    writing, done = threading.Event(), threading.Event()

    def other_writer():
        with db.write_transaction() as conn:
            conn.execute(text("UPDATE workspaces SET name = name"))
            writing.set()
            done.wait(0.5)  # sign-in has read by now, without the lock taken first

    t = threading.Thread(target=other_writer)
    t.start()
    writing.wait(10)
    try:
        user = accounts.authenticate("owner@example.com", PASSWORD)
    finally:
        done.set()
        t.join(10)
    assert user.last_login_at is not None
