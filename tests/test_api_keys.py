from datetime import timedelta

import pytest

from engine import api_keys, audit
from engine.dbtypes import utcnow
from engine.errors import InvalidCredentials, InvalidInput, PermissionDenied
from tests.factories import member, owner


def test_key_is_shown_once_stored_hashed_and_scoped(database):
    boss = owner()
    view, secret = api_keys.create_api_key(boss, "CI", ["usage:read"])
    assert secret.startswith(view.prefix + "_") and view.status == "active"
    assert all(secret not in repr(k) for k in api_keys.list_api_keys(boss))
    assert api_keys.verify_api_key(secret, "usage:read").workspace_id == boss.workspace_id
    with pytest.raises(InvalidCredentials, match="scope"):
        api_keys.verify_api_key(secret, "generate")
    with pytest.raises(InvalidCredentials):
        api_keys.verify_api_key(secret[:-1] + "x", "usage:read")


def test_revoked_and_expired_keys_fail(database, monkeypatch):
    boss = owner()
    view, secret = api_keys.create_api_key(boss, "Temp", ["generate"], expires_at=utcnow() + timedelta(days=1))
    later = utcnow() + timedelta(days=2)
    monkeypatch.setattr(api_keys, "utcnow", lambda: later)
    with pytest.raises(InvalidCredentials):
        api_keys.verify_api_key(secret, "generate")
    monkeypatch.undo()
    api_keys.revoke_api_key(boss, view.id)
    with pytest.raises(InvalidCredentials):
        api_keys.verify_api_key(secret, "generate")
    actions = [e.action for e in audit.list_events(boss)[0]]
    assert actions[:2] == ["api_key.revoked", "api_key.created"]


def test_bad_key_requests(database):
    boss = owner()
    editor = member(boss, "editor@example.com", "editor")
    with pytest.raises(InvalidInput):
        api_keys.create_api_key(boss, "No scopes", [])
    with pytest.raises(InvalidInput, match="Unknown scope"):
        api_keys.create_api_key(boss, "Bad", ["root"])
    with pytest.raises(InvalidInput, match="future"):
        api_keys.create_api_key(boss, "Past", ["generate"], expires_at=utcnow() - timedelta(days=1))
    with pytest.raises(PermissionDenied):
        api_keys.create_api_key(editor, "Mine", ["generate"])
    assert api_keys.list_api_keys(boss) == []
