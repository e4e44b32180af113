"""Provider connections: who may manage them, what is validated, keys write-only, and Test connection."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from engine import accounts, audit, connections, db
from engine.config import get_settings
from engine.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from engine.models import AuditEvent, ProviderConnection, RouteTarget, WorkspaceKey
from engine.permissions import Actor
from tests.factories import member, owner
from tests.fakes.openai_server import API_KEY, FakeOpenAI

OPENAI_KEY = "sk-proj-abcdefghijklmnopqrstuv0123456789WXYZ"


@pytest.fixture(autouse=True)
def key_file(tmp_path, monkeypatch):
    monkeypatch.setenv("METERBOOK_SECRET_KEY_FILE", str(tmp_path / "secret.key"))
    monkeypatch.delenv("METERBOOK_SECRET_KEY", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def snapshot() -> list[tuple]:
    """Everything a connection write could touch, to show a refused write left it all alone."""
    with db.read_session() as s:
        return [
            *[(c.id, c.name, c.provider_type, c.base_url, c.secret_ciphertext, c.secret_hint, c.options, c.enabled)
              for c in s.scalars(select(ProviderConnection).order_by(ProviderConnection.id))],
            *[(k.workspace_id, k.wrapped_key) for k in s.scalars(select(WorkspaceKey))],
            *[(e.id, e.action) for e in s.scalars(select(AuditEvent))],
        ]


def api_key_of(actor: Actor, connection_id: int) -> str | None:
    return connections.provider_config(None, actor.workspace_id, connection_id)[1].api_key


def test_create_list_and_provider_config(database):
    boss = owner()
    viewer = member(boss, "viewer@example.com", "viewer")
    created = connections.create_connection(
        boss, name=" OpenAI ", provider_type="openai", api_key=f"  {OPENAI_KEY}\n",
        options={"timeout": 30, "headers": {"OpenAI-Organization": "org-1"}, "stream_usage": False},
    )
    assert (created.name, created.price_provider, created.key_hint, created.has_key) == ("openai", "openai", "sk-…WXYZ", True)
    listed = connections.list_connections(viewer)
    assert [c.name for c in listed] == ["openai"] and listed[0].key_hint == "sk-…WXYZ"
    assert OPENAI_KEY not in repr(listed) and "WXYZ" not in repr(listed).replace("sk-…WXYZ", "")
    assert connections.get_connection(viewer, created.id) == listed[0]

    view, config = connections.provider_config(None, boss.workspace_id, created.id)
    assert view == listed[0]
    assert (config.api_key, config.base_url, config.timeout) == (OPENAI_KEY, None, 30.0)
    assert dict(config.headers) == {"OpenAI-Organization": "org-1"} and dict(config.options) == {"stream_usage": False}

    local = connections.create_connection(boss, name="local-ollama", provider_type="openai-compatible",
                                          base_url="http://127.0.0.1:11434/v1/")
    assert (local.base_url, local.key_hint, local.has_key, local.price_provider) == ("http://127.0.0.1:11434/v1", None, False, None)
    assert api_key_of(boss, local.id) is None


def test_roles_viewers_and_editors_read_only(database):
    boss = owner()
    admin = member(boss, "admin@example.com", "admin")
    conn = connections.create_connection(admin, name="openai", provider_type="openai", api_key=OPENAI_KEY)
    for role in ("viewer", "editor"):
        someone = member(boss, f"{role}@example.com", role)
        before = snapshot()
        with pytest.raises(PermissionDenied, match="manage provider connections"):
            connections.create_connection(someone, name="mine", provider_type="openai", api_key=OPENAI_KEY)
        with pytest.raises(PermissionDenied):
            connections.update_connection(someone, conn.id, api_key="sk-stolen-0000000000000000")
        with pytest.raises(PermissionDenied):
            connections.delete_connection(someone, conn.id)
        with pytest.raises(PermissionDenied):
            connections.test_connection(someone, conn.id)
        assert snapshot() == before
        assert [c.key_hint for c in connections.list_connections(someone)] == ["sk-…WXYZ"]
    assert api_key_of(boss, conn.id) == OPENAI_KEY


def test_bad_input_leaves_the_database_unchanged(database):
    boss = owner()
    connections.create_connection(boss, name="openai", provider_type="openai", api_key=OPENAI_KEY)
    before = snapshot()
    cases = [
        (InvalidInput, "Unknown provider type", dict(name="x", provider_type="openai-ish", api_key=OPENAI_KEY)),
        (InvalidInput, "http:// or https://", dict(name="x", provider_type="openai-compatible", base_url="ftp://host/v1")),
        (InvalidInput, "http:// or https://", dict(name="x", provider_type="openai-compatible", base_url="javascript:alert(1)")),
        (InvalidInput, "http:// or https://", dict(name="x", provider_type="openai-compatible", base_url="http:///v1")),
        (InvalidInput, "user name, password", dict(name="x", provider_type="openai-compatible", base_url="https://u:sk-secret@host/v1")),
        (InvalidInput, "query string", dict(name="x", provider_type="gemini", api_key=OPENAI_KEY, base_url="https://host/v1?key=AIzaXYZ")),
        (InvalidInput, "needs its base URL", dict(name="x", provider_type="openai-compatible")),
        (InvalidInput, "needs an API key", dict(name="x", provider_type="anthropic")),
        (InvalidInput, "connection name", dict(name="has space", provider_type="openai", api_key=OPENAI_KEY)),
        (InvalidInput, "connection name", dict(name="", provider_type="openai", api_key=OPENAI_KEY)),
        (InvalidInput, "line breaks", dict(name="x", provider_type="openai", api_key="sk-abc\ndef")),
        (InvalidInput, "Credentials cannot go in extra headers",
         dict(name="x", provider_type="openai", api_key=OPENAI_KEY, options={"headers": {"Authorization": "Bearer x"}})),
        (InvalidInput, "timeout", dict(name="x", provider_type="openai", api_key=OPENAI_KEY, options={"timeout": -1})),
        (Conflict, "already has a connection named 'openai'", dict(name="OpenAI", provider_type="openai", api_key=OPENAI_KEY)),
    ]
    for error, message, kwargs in cases:
        with pytest.raises(error, match=message):
            connections.create_connection(boss, **kwargs)
        assert snapshot() == before, kwargs


def test_update_keeps_the_key_unless_given_and_rebinds_it(database):
    boss = owner()
    conn = connections.create_connection(boss, name="openai", provider_type="openai", api_key=OPENAI_KEY)
    connections.create_connection(boss, name="groq", provider_type="openai-compatible",
                                  base_url="https://api.groq.com/openai/v1", api_key="gsk_0123456789abcdefghij")

    renamed = connections.update_connection(boss, conn.id, name="openai-main", api_key="", enabled=False)
    assert (renamed.name, renamed.enabled, renamed.key_hint) == ("openai-main", False, "sk-…WXYZ")
    assert api_key_of(boss, conn.id) == OPENAI_KEY  # re-encrypted for the new name, still readable

    moved = connections.update_connection(boss, conn.id, provider_type="openai-compatible", base_url="https://proxy.example/v1")
    assert (moved.provider_type, moved.base_url) == ("openai-compatible", "https://proxy.example/v1")
    assert api_key_of(boss, conn.id) == OPENAI_KEY

    rekeyed = connections.update_connection(boss, conn.id, api_key="sk-new-key-000000000000000000009876")
    assert rekeyed.key_hint == "sk-…9876" and api_key_of(boss, conn.id) == "sk-new-key-000000000000000000009876"

    cleared = connections.update_connection(boss, conn.id, clear_key=True)
    assert not cleared.has_key and api_key_of(boss, conn.id) is None

    before = snapshot()
    with pytest.raises(InvalidInput, match="needs an API key"):
        connections.update_connection(boss, conn.id, provider_type="openai")
    with pytest.raises(Conflict, match="'groq'"):
        connections.update_connection(boss, conn.id, name="groq")
    with pytest.raises(InvalidInput, match="https://"):
        connections.update_connection(boss, conn.id, base_url="file:///etc/passwd")
    assert snapshot() == before

    events = [e for e in audit.list_events(boss)[0] if e.action.startswith("provider.")]
    assert [e.action for e in events] == ["provider.updated"] * 4 + ["provider.created"] * 2
    assert events[1].detail["changed"] == ["key"] and events[1].detail["key"] == "sk-…9876"
    assert all(OPENAI_KEY not in str(e.detail) for e in events)


def test_connections_belong_to_their_workspace(database):
    boss = owner()
    conn = connections.create_connection(boss, name="openai", provider_type="openai", api_key=OPENAI_KEY)
    elsewhere = Actor(boss.user_id, accounts.create_workspace(boss.user_id, "Other").id)
    assert connections.list_connections(elsewhere) == []
    for call in (lambda: connections.get_connection(elsewhere, conn.id),
                 lambda: connections.update_connection(elsewhere, conn.id, enabled=False),
                 lambda: connections.delete_connection(elsewhere, conn.id),
                 lambda: connections.provider_config(None, elsewhere.workspace_id, conn.id)):
        with pytest.raises(NotFound):
            call()
    # The same name is free in another workspace.
    connections.create_connection(elsewhere, name="openai", provider_type="openai", api_key=OPENAI_KEY)


def test_delete_refuses_while_routes_use_it_unless_asked(database):
    boss = owner()
    conn = connections.create_connection(boss, name="openai", provider_type="openai", api_key=OPENAI_KEY)
    with db.transaction() as s:
        s.add(RouteTarget(workspace_id=boss.workspace_id, kind="text", connection_id=conn.id, model="gpt-4o-mini"))
    before = snapshot()
    with pytest.raises(Conflict, match="used by 1 route target"):
        connections.delete_connection(boss, conn.id)
    assert snapshot() == before
    done = connections.delete_connection(boss, conn.id, remove_from_routes=True)
    assert done.route_targets_removed == 1 and "removed it from 1 route target" in done.describe()
    assert connections.list_connections(boss) == []
    with db.read_session() as s:
        assert s.scalars(select(RouteTarget)).all() == []
    assert audit.list_events(boss)[0][0].action == "provider.deleted"
    with pytest.raises(NotFound):
        connections.delete_connection(boss, conn.id)


def test_test_connection_against_a_local_server(sqlite_database):
    boss = owner()
    with FakeOpenAI() as fake:
        good = connections.create_connection(boss, name="local", provider_type="openai-compatible",
                                             base_url=fake.base_url, api_key=API_KEY)
        result = connections.test_connection(boss, good.id)
        assert result.ok and result.latency_ms is not None
        assert fake.received[-1].header("authorization") == f"Bearer {API_KEY}"

        wrong_key = "sk-wrong-0123456789abcdefghijklmnop"
        bad = connections.create_connection(boss, name="local-bad", provider_type="openai-compatible",
                                            base_url=fake.base_url, api_key=wrong_key)
        failed = connections.test_connection(boss, bad.id)  # the fake echoes the key it was given
    assert not failed.ok and failed.detail
    assert wrong_key not in failed.detail and "WXYZ" not in failed.detail

    by_name = {c.name: c for c in connections.list_connections(boss)}
    assert by_name["local"].last_test_ok is True and by_name["local"].last_test_error is None
    assert by_name["local-bad"].last_test_ok is False and by_name["local-bad"].last_tested_at is not None
    assert wrong_key not in by_name["local-bad"].last_test_error
    assert [e.detail["ok"] for e in audit.list_events(boss)[0] if e.action == "provider.tested"] == [False, True]

    # Nothing listening: still an answer, not an exception.
    down = connections.create_connection(boss, name="down", provider_type="openai-compatible",
                                         base_url="http://127.0.0.1:9/v1")
    assert connections.test_connection(boss, down.id).ok is False
