"""Managing routes: adding, ordering, limits, policies; permissions and bad input."""

from __future__ import annotations

import pytest

from engine import accounts, db, routes
from engine.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from engine.models import ProviderConnection
from engine.permissions import Actor
from tests.factories import member, owner


@pytest.fixture
def setup(database):
    boss = owner()
    with db.transaction() as s:
        ids = []
        for name in ("openai", "anthropic"):
            c = ProviderConnection(workspace_id=boss.workspace_id, name=name, provider_type=name)
            s.add(c)
            s.flush()
            ids.append(c.id)
    return boss, ids


def test_targets_keep_their_order_and_can_be_moved(setup):
    boss, (oa, an) = setup
    a = routes.add_target(boss, "text", connection_id=oa, model="gpt-4o-mini", rpm_limit="60")
    b = routes.add_target(boss, "text", connection_id=an, model="claude-haiku-4-5", context_window=200_000)
    c = routes.add_target(boss, "text", connection_id=oa, model="gpt-4o")
    assert routes.choices(boss, "text") == ["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5", "openai/gpt-4o"]
    routes.move_target(boss, c, -2)
    assert [t.id for t in routes.get_route(boss, "text").targets] == [c, a, b]
    routes.move_target(boss, c, +10)  # past the end: stays last
    assert [t.id for t in routes.get_route(boss, "text").targets] == [a, b, c]
    view = routes.get_route(boss, "text").targets[0]
    assert view.rpm_limit == 60 and view.state == "unknown"
    routes.update_target(boss, a, enabled=False)
    assert routes.choices(boss, "text") == ["anthropic/claude-haiku-4-5", "openai/gpt-4o"]
    routes.remove_target(boss, b)
    assert [t.id for t in routes.get_route(boss, "text").targets] == [a, c]


def test_policy_defaults_and_changes(setup):
    boss, _ = setup
    assert routes.get_route(boss, "image").strategy == "priority"
    routes.set_policy(boss, "image", strategy="cost", max_attempts="3", retries_per_target="0")
    r = routes.get_route(boss, "image")
    assert (r.strategy, r.max_attempts, r.retries_per_target) == ("cost", 3, 0)


def test_bad_input_and_permissions_leave_routes_unchanged(setup):
    boss, (oa, _) = setup
    routes.add_target(boss, "text", connection_id=oa, model="gpt-4o-mini")
    with pytest.raises(Conflict):
        routes.add_target(boss, "text", connection_id=oa, model="gpt-4o-mini")
    for kwargs in ({"model": ""}, {"model": "x", "rpm_limit": "lots"}, {"model": "x", "tpm_limit": 0}):
        with pytest.raises(InvalidInput):
            routes.add_target(boss, "text", connection_id=oa, **kwargs)
    with pytest.raises(InvalidInput):
        routes.add_target(boss, "smell", connection_id=oa, model="x")
    with pytest.raises(NotFound):
        routes.add_target(boss, "text", connection_id=9999, model="x")
    with pytest.raises(InvalidInput):
        routes.set_policy(boss, "text", strategy="random", max_attempts=3, retries_per_target=1)
    editor = member(boss, "ed@example.com", "editor")
    with pytest.raises(PermissionDenied):
        routes.add_target(editor, "text", connection_id=oa, model="gpt-4o")
    assert routes.choices(editor, "text") == ["openai/gpt-4o-mini"]
    other = Actor(editor.user_id, accounts.create_workspace(editor.user_id, "Editor's own").id)
    with pytest.raises(NotFound):
        routes.add_target(other, "text", connection_id=oa, model="gpt-4o")
